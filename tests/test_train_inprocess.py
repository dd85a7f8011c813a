"""The trainer run in this process (1 rank, gloo, real DeepSpeed engine, real demo shards), observed from inside:

* precision: what dtype the student weights, master weights, activations, teacher and targets have (bf16 run);
* host synchronisations per training step, counted by call site (a CPU stand-in for CUDA's sync debug mode);
* ``train.compile``: the whole student step compiled in place (ZeRO 0 and 2), a few real steps.
"""

from __future__ import annotations

import collections
import re
import sys
import traceback
from pathlib import Path

import pytest
import torch

from helpers import run_trainer, scalars, tiny_data, tmp_path_base


# Tensor methods that make the host wait for the device (on a GPU): reading values back, or a shape that
# depends on them (nonzero).
SYNC_METHODS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "nonzero")


class SyncCounter:
    """Counts calls of SYNC_METHODS while active, keyed by the innermost frame of ours or DeepSpeed's
    (file:function)."""

    def __init__(self):
        self.sites: collections.Counter = collections.Counter()
        self.active = False
        self._saved = {}

    def __enter__(self):
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def wrapper(t, *args, _original=original, **kwargs):
                if self.active:
                    self.active = False  # calls made inside the method itself do not count twice
                    try:
                        self.sites[self._site()] += 1
                    finally:
                        self.active = True
                return _original(t, *args, **kwargs)

            setattr(torch.Tensor, name, wrapper)
        return self

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)

    @staticmethod
    def _site() -> str:
        for frame in reversed(traceback.extract_stack()[:-2]):  # without _site and the wrapper
            if "unimodal_free" in frame.filename or "/deepspeed/" in frame.filename:
                return f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.name}"
        return "other"


@pytest.mark.slow
def test_bf16_dtypes_of_weights_activations_teacher_and_targets(tmp_path, monkeypatch):
    """bf16 = DeepSpeed's bf16 alone: bf16 student weights and activations (no autocast anywhere),
    fp32 master weights in the optimizer, fp32 teacher (weights and activations) and fp32 targets."""
    import unimodal_free.objective.task as task_mod
    from unimodal_free.model.joint import unwrap

    seen: dict[str, set] = collections.defaultdict(set)

    def record(name):
        def hook(module, inputs, output):
            out = output[-1] if isinstance(output, (list, tuple)) else output
            seen[name].add(out.dtype)
            seen[f"{name} autocast"].add(torch.is_autocast_enabled("cpu"))
        return hook

    def observe(trainer):
        student = unwrap(trainer.engine.module)
        seen["student weights"] = {p.dtype for p in student.parameters()}
        seen["master weights"] = {p.dtype for g in trainer.engine.optimizer.optimizer.param_groups for p in g["params"]}
        seen["teacher weights"] = {p.dtype for p in trainer.teacher.module.parameters()}
        for name, model in (("student", student), ("teacher", unwrap(trainer.teacher.module))):
            block = model.encoder.blocks[0]
            block.register_forward_hook(record(f"{name} latent block"))
            linear = next(m for m in block.modules() if isinstance(m, torch.nn.Linear))
            linear.register_forward_hook(record(f"{name} linear"))

    real_targets = task_mod.teacher_targets

    def targets(*args, **kwargs):
        out = real_targets(*args, **kwargs)
        seen["targets"] |= {t.dtype for t in out.values()}
        return out

    monkeypatch.setattr(task_mod, "teacher_targets", targets)
    rc = run_trainer(tmp_path, monkeypatch, "train.precision=bf16", "train.max_steps=2", "train.log_every=1",
                     "deepspeed.zero_stage=1", "eval.every=2", "eval.model=student", "eval.max_samples=16",
                     "eval.max_time_share=1.0", observe=observe)
    assert rc == 0
    assert [s for s, _ in scalars(tmp_path / "run", "val/image_to_text_R@1")] == [2]  # the bf16 student evaluates
    assert seen["student weights"] == {torch.bfloat16}
    assert seen["master weights"] == {torch.float32}
    assert seen["student latent block"] == seen["student linear"] == {torch.bfloat16}
    assert seen["teacher weights"] == {torch.float32}
    assert seen["teacher latent block"] == seen["teacher linear"] == {torch.float32}
    assert seen["targets"] == {torch.float32}
    assert seen["student latent block autocast"] == seen["teacher latent block autocast"] == {False}


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["objective.target_space=latents", "objective.target_space=elements",
                                     "objective.negative_queue=64"])
def test_host_syncs_per_step(tmp_path, monkeypatch, capsys, setting):
    """Inside a training step the host reads a tensor only where the step is decided: the optimizer's
    non-finite check and the stop flag, 2 per step. Nothing else: the masking, the compact views, the
    alignment pairs, the negative queue's ring and the FLOPs take their sizes from the batch's host-side
    counts, and the metrics, row counts and normalisation statistics stay on the device."""
    from unimodal_free.train.step import TrainStep

    counter = SyncCounter()
    steps = 3
    real_step = TrainStep.run

    def counted_step(self, *args, **kwargs):
        counter.active = True
        try:
            return real_step(self, *args, **kwargs)
        finally:
            counter.active = False

    monkeypatch.setattr(TrainStep, "run", counted_step)
    from unimodal_free.model.joint import unwrap

    students = []
    with counter:
        rc = run_trainer(tmp_path, monkeypatch, f"train.max_steps={steps}", f"train.log_every={steps}",
                         setting, observe=lambda trainer: students.append(unwrap(trainer.engine.module)))
    assert rc == 0
    if "negative_queue" in setting:  # the queue really took part: it holds the run's teacher keys
        queue = students[0].negative_queue
        assert all(queue.negatives(m) is not None for m in ("image", "speech", "text"))
    per_step = {site: n / steps for site, n in sorted(counter.sites.items())}
    with capsys.disabled():
        print(f"\nhost syncs per step (tiny config, {setting}, 1 rank, fp32 ZeRO-0): "
              f"{sum(per_step.values()):.1f} {per_step}", file=sys.stderr)
    # The trainer's own step code: the loop, the step, its interval metrics and the callbacks' dispatch.
    trainer_files = ("train/trainer.py", "train/step.py", "train/metrics.py", "train/callbacks.py")
    assert not [s for s in per_step if s.startswith(trainer_files)], per_step
    assert not [s for s in per_step if s.endswith(":batch_moments")], per_step
    dist_sites = {s: n for s, n in per_step.items() if s.startswith("train/dist.py")}
    assert dist_sites.get("train/dist.py:any_flags", 0) <= 1, dist_sites  # the stop flag, once per step
    # What is left: the optimizer's non-finite check (DeepSpeed's under ZeRO / bf16) and the stop flag.
    assert set(per_step) <= {"train/optim.py:step", "train/dist.py:any_flags"}, per_step
    assert sum(per_step.values()) <= 2, per_step


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2])
def test_compiled_step_trains(tmp_path, monkeypatch, stage):
    """train.compile=true under ZeRO 0 and 2: the whole student step (teacher targets, student, alignment,
    loss and their backward) is compiled in place, gives the eager run's first loss, trains, and its
    checkpoint keys are the eager model's."""
    from unimodal_free.model.joint import unwrap
    from unimodal_free.store.weights import load_weights

    compiled = {}

    def observe(trainer):
        compiled["step"] = getattr(unwrap(trainer.engine.module), "_compiled_call_impl", None) is not None

    sets = ("train.max_steps=2", "train.log_every=1", f"deepspeed.zero_stage={stage}")
    assert run_trainer(tmp_path / "eager", monkeypatch, *sets) == 0
    rc = run_trainer(tmp_path, monkeypatch, "train.compile=true", *sets, observe=observe)
    assert rc == 0 and compiled["step"]
    eager, fused = scalars(tmp_path / "eager" / "run", "train/loss"), scalars(tmp_path / "run", "train/loss")
    assert eager[0][0] == fused[0][0] == 1
    assert fused[0][1] == pytest.approx(eager[0][1], rel=1e-4)  # same weights, same masks: only the kernels differ
    weights = load_weights(tmp_path / "run")
    assert weights.step == 2 and all(torch.isfinite(v.float()).all() for v in weights.student.values())
    assert not [k for k in weights.student if "_orig_mod" in k]
    assert weights.student.keys() == weights.teacher.keys()


@pytest.mark.slow
def test_missing_modality_warning_and_per_modality_rows(tmp_path, monkeypatch, capsys):
    """A corpus without speech (the demo shard with its audio members dropped): a start-up warning names the
    modality and the batches looked at; train/rows/{m} and train/rows_per_s/{m} are logged for every
    configured modality (0 for speech), and the row counts add up to the samples seen."""
    import shutil
    import tarfile

    demo = tiny_data(tmp_path_base(tmp_path))
    speechless = tmp_path / "speechless"
    speechless.mkdir()
    shutil.copy(demo / "train" / "sizes.json", speechless / "sizes.json")
    with tarfile.open(demo / "train" / "shard-000000.tar") as src, \
            tarfile.open(speechless / "shard-000000.tar", "w") as dst:
        for member in src.getmembers():
            if not member.name.endswith((".flac", ".wav", ".ogg")):
                dst.addfile(member, src.extractfile(member))
    rc = run_trainer(tmp_path, monkeypatch, f"data.train={speechless}", "train.max_steps=4", "train.log_every=2")
    assert rc == 0
    err = capsys.readouterr().err
    assert "warning: configured modality 'speech' appeared in none of the first 2 batches (steps 1-2, 1 rank(s))" in err
    run_dir = tmp_path / "run"
    rows = {m: dict(scalars(run_dir, f"train/rows/{m}")) for m in ("image", "speech", "text")}
    assert rows["speech"] == {2: 0.0, 4: 0.0} and all(rows["image"][s] > 0 for s in (2, 4))
    seen = dict(scalars(run_dir, "train/samples_seen"))
    assert sum(rows[m][2] for m in rows) == seen[2] and sum(rows[m][4] for m in rows) == seen[4] - seen[2]
    per_s = dict(scalars(run_dir, "train/rows_per_s/image"))
    assert per_s[2] > 0 and dict(scalars(run_dir, "train/rows_per_s/speech"))[2] == 0.0


STEP_LINE = re.compile(r"^step (\d+)/(\d+)  loss \S+  (?:loss/\w+ \S+  )*(?:align_loss \S+  )?lr \S+  "
                       r"(?:grad_norm \S+  )?samples/s \S+  (?:skipped_steps \d+  )?elapsed \S+  eta \S+$")


def step_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("step ") and "  loss " in line]


@pytest.mark.slow
def test_plain_progress_lines_on_a_pipe_and_in_log_txt(tmp_path, monkeypatch, capsys):
    """stdout and stderr not terminals (a cluster job's log): no progress bar, no carriage return; one plain
    ``step N/M  loss ...  eta ...`` line per log interval on stdout, the same lines in run_dir/log.txt between
    a start and an end line; loss and lr as TensorBoard has them. A resumed run appends to log.txt."""
    from unimodal_free.train.textlog import parse_fields

    rc = run_trainer(tmp_path, monkeypatch, "train.max_steps=4", "train.log_every=2", "train.checkpoint_every=2")
    assert rc == 0
    out, err = capsys.readouterr()
    assert "\r" not in out and "\r" not in err
    lines = step_lines(out)
    assert [parse_fields(line)["step"] for line in lines] == ["2/4", "4/4"], out
    assert all(STEP_LINE.match(line) for line in lines), lines
    run_dir = tmp_path / "run"
    loss, lr = dict(scalars(run_dir, "train/loss")), dict(scalars(run_dir, "train/lr"))
    for line in lines:
        fields = parse_fields(line)
        step = int(fields["step"].split("/")[0])
        assert float(fields["loss"]) == pytest.approx(loss[step], abs=1e-4)
        assert float(fields["lr"]) == pytest.approx(lr[step], rel=1e-2)
        assert {"loss/image", "loss/speech", "loss/text", "grad_norm", "samples/s"} <= fields.keys()
    assert parse_fields(lines[-1])["eta"] == "0s"
    log = (run_dir / "log.txt").read_text().splitlines()
    start, end = parse_fields(log[0]), parse_fields(log[-1])
    assert "start" in start and start["step"] == "0/4" and start["world_size"] == "1" and start["device"] == "cpu"
    assert start["precision"] == "fp32" and start["config"] == "configs/tiny.json" and start["command"]
    assert step_lines("\n".join(log)) == lines
    assert any(line.startswith("exported ") for line in log)  # messages land there too
    assert "end" in end and end["step"] == "4/4" and end["exit"] == "0" and end["reason"] == "done"
    assert "start " in err and "end " in err and not step_lines(err)  # start/end lines are messages (stderr)

    # The step-4 checkpoint broken (same size): the resume falls back to step 2 and says so, in log.txt too.
    weights = run_dir / "checkpoints" / "step00000004" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    rc = run_trainer(tmp_path, monkeypatch, "train.max_steps=6", "train.log_every=2", "train.resume=auto")
    assert rc == 0
    log = (run_dir / "log.txt").read_text().splitlines()
    assert [parse_fields(line)["step"] for line in step_lines("\n".join(log))] == ["2/4", "4/4", "4/6", "6/6"]
    assert [line.split("  ")[0].split(" ")[0] for line in log if line.startswith(("start ", "end "))] == \
        ["start", "end", "start", "end"]
    assert any(line.startswith("falling back to ") and "step00000002" in line for line in log), log
    assert any(line.startswith("resuming from ") and line.endswith("at step 2") for line in log), log
    out, err = capsys.readouterr()
    assert step_lines(out) == step_lines("\n".join(log))[-2:]
    assert err.count("falling back to ") == 1  # printed once, when it happened


@pytest.mark.slow
def test_progress_bar_on_a_terminal_without_plain_lines(tmp_path, monkeypatch):
    """stdout and stderr a terminal (a real pty): the tqdm bar draws (carriage returns), no plain step lines
    duplicate it on the terminal; log.txt still gets them."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)  # no \n -> \r\n translation: every \r read back is the bar's
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    terminal = os.fdopen(slave, "w", buffering=1)
    received = []

    def drain():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        rc = run_trainer(tmp_path, monkeypatch, "train.max_steps=4", "train.log_every=2")
    finally:
        monkeypatch.undo()
        terminal.close()
        reader.join(timeout=30)
        os.close(master)
    assert rc == 0
    shown = b"".join(received).decode(errors="replace")
    assert "\r" in shown and "train: 100%" in shown, shown[-2000:]
    assert not step_lines(shown.replace("\r", "\n")), shown[-2000:]
    assert "end " in shown  # messages still reach the terminal, through the bar
    assert len(step_lines((tmp_path / "run" / "log.txt").read_text())) == 2


def test_cross_weight_run_logs_cross_loss(tmp_path, monkeypatch, capsys):
    """objective.cross_weight > 0 through the real trainer: every step's cross_loss reaches TensorBoard
    (train/cross_loss) and the step lines."""
    rc = run_trainer(tmp_path, monkeypatch, "objective.cross_weight=1.0", "train.max_steps=2", "train.log_every=1")
    assert rc == 0
    logged = scalars(tmp_path / "run", "train/cross_loss")
    assert [step for step, _ in logged] == [1, 2] and all(value > 0 for _, value in logged)
    lines = step_lines(capsys.readouterr().out)
    assert len(lines) == 2 and all("  cross_loss " in line for line in lines), lines
