"""End-to-end trainings with DeepSpeed's own launcher: 2 CPU ranks (gloo), tiny model, tiny demo shards.

One 8-step run per ZeRO stage serves several checks: the first steps' losses
agree across stages, the ZeRO-3 teacher equals the ZeRO-0 teacher, every
required TensorBoard tag is there, the export and the run dir load the same
weights. The runs are cached for the session (helpers.stage_run) so
test_checkpoint_resume.py reuses the ZeRO-3 one as its uninterrupted reference.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from helpers import (
    MAX_STEPS,
    ROOT,
    needs_launcher,
    run,
    scalars,
    stage_run,
    start,
    tail,
    tiny_data,
    train_cmd,
    unbalanced_data,
    warm_up_deepspeed,
)


def specs_of(weights):
    """Modality specs of a loaded run (vocabulary from its recorded tokenizer)."""
    from unimodal_free.batch import modality_specs
    from unimodal_free.data.reading.tokenizer import load_tokenizer

    return modality_specs(weights.cfg.data, load_tokenizer(weights.tokenizer_ref["path"]).vocab_size)


def scalar_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    return set(ea.Tags()["scalars"])


# ---------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "train_runs"


def ranks_missing_speech(base: Path) -> list[int]:
    """Per step of the launch runs on the unbalanced corpus: ranks whose micro batch has no speech row
    while the other rank's has (read with the trainer's own loader, rank by rank)."""
    from unimodal_free.config import load_config
    from unimodal_free.data.loading.loader import make_train_loader
    from unimodal_free.data.reading.tokenizer import load_tokenizer

    data = tiny_data(base)
    sets = [s for s in train_cmd(data, base / "unused", 0, f"data.train={unbalanced_data(base)}", launcher=False)
            if "=" in s]
    cfg = load_config(ROOT / "configs" / "tiny.json", sets)
    tok = load_tokenizer(str(data / "tokenizer.model"))
    has = []
    for rank in (0, 1):
        loader = make_train_loader(cfg.data, cfg.train, cfg.data.train, tok, rank, 2)
        has.append(["speech" in next(loader).parts for _ in range(MAX_STEPS)])
        del loader
    return [rank for step in zip(*has) for rank in (0, 1) if not step[rank] and step[1 - rank]]


@pytest.mark.slow
@needs_launcher
@pytest.mark.parametrize("corpus", ["balanced", "unbalanced"])
def test_zero_stages_agree(base, corpus):
    """Same seed and data: ZeRO 0/1/2/3 give the same losses, the same teacher and student.

    ``unbalanced``: one rank's micro batch lacks speech while the other's has it, at several steps
    (checked with the trainer's loader), under ZeRO 0, 2 and 3: every rank still reduces the same
    gradients (the speech parameters' are zero where no speech is), so no gloo size mismatch and
    the stages agree as with the balanced demo.

    Tolerances: losses of the first 4 steps rtol 1e-4; teacher after 2 steps rtol 1e-4 / atol 1e-6
    (measured: <= 4e-9 for ZeRO-1/2, ~1e-7 for ZeRO-3); student after 2 steps atol 1e-4 (measured
    ~1e-5 for ZeRO-3 on near-zero-gradient parameters such as the final LayerNorm bias: the stages
    reduce gradients in different orders, fp32 rounding differs at ~1e-7, and Adam's update
    g / (sqrt(v) + eps) magnifies that where |g| is close to eps). Later steps drift further apart
    by the same amplification; instead, every step's teacher is checked against the EMA formula
    applied to that run's own student (tight: rtol 1e-6 / atol 1e-7), under every stage.
    """
    from unimodal_free.model import build_model, ema_schedule
    from unimodal_free.store.weights import load_weights

    base.mkdir(parents=True, exist_ok=True)
    stages = (0, 1, 2, 3)
    if corpus == "unbalanced":
        stages = (0, 2, 3)
        missing = ranks_missing_speech(base)
        assert len(missing) >= 3, missing
    runs = {stage: stage_run(stage, base, corpus) for stage in stages}
    losses = {stage: scalars(run_dir, "train/loss") for stage, run_dir in runs.items()}
    steps = [s for s, _ in losses[0]]
    assert steps == list(range(1, MAX_STEPS + 1))
    for stage in stages[1:]:
        assert [s for s, _ in losses[stage]] == steps
        torch.testing.assert_close(
            torch.tensor([v for _, v in losses[stage][:4]]), torch.tensor([v for _, v in losses[0][:4]]),
            rtol=1e-4, atol=0,
        )
    early = {stage: load_weights(run_dir / "checkpoints" / "step00000002") for stage, run_dir in runs.items()}
    ref = early[0]
    for stage in stages[1:]:
        assert early[stage].teacher.keys() == ref.teacher.keys() == early[stage].student.keys()
        for k in ref.teacher:
            torch.testing.assert_close(early[stage].teacher[k], ref.teacher[k], rtol=1e-4, atol=1e-6,
                                       msg=f"ZeRO-{stage} teacher {k} at step 2")
            torch.testing.assert_close(early[stage].student[k], ref.student[k], rtol=1e-4, atol=1e-4,
                                       msg=f"ZeRO-{stage} student {k} at step 2")
    # Under every stage the teacher is exactly the EMA of the full student after each applied step
    # (ZeRO-3: of the gathered partitions): T_s = d_{s-1} T_{s-1} + (1 - d_{s-1}) S_s, buffers copied.
    decay = ema_schedule(ref.cfg.objective)
    for stage, run_dir in runs.items():
        w = {s: load_weights(run_dir / "checkpoints" / f"step{s:08d}") for s in range(1, MAX_STEPS + 1)}
        params = {n for n, _ in build_model(ref.cfg.model, ref.cfg.objective, specs_of(w[1])).named_parameters()}
        for s in range(2, MAX_STEPS + 1):
            d = float(decay[min(s - 1, len(decay) - 1)])
            for k in ref.teacher:
                want = w[s - 1].teacher[k] * d + w[s].student[k] * (1 - d) if k in params else w[s].student[k]
                torch.testing.assert_close(w[s].teacher[k], want, rtol=1e-6, atol=1e-7,
                                           msg=f"ZeRO-{stage} teacher {k} at step {s}")
        assert w[MAX_STEPS].step == MAX_STEPS and all(torch.isfinite(v.float()).all() for v in w[MAX_STEPS].student.values())
        # The relation is not trivially true: the teacher lags the student.
        assert max((w[MAX_STEPS].teacher[k] - w[MAX_STEPS].student[k]).abs().max().item() for k in params) > 1e-4
    assert [s for s, _ in scalars(runs[3], "val/image_to_text_R@1")] == [4, 8]  # student eval under ZeRO-3


@pytest.mark.slow
@needs_launcher
def test_run_dir_layout_tensorboard_tags_and_export(base):
    """Run dir: resolved config, TB events with every required tag, checkpoints + latest, export == run dir."""
    from unimodal_free.config import load_config
    from unimodal_free.modalities import MODALITIES
    from unimodal_free.store.checkpoints import is_complete
    from unimodal_free.store.export import EXPORT_NAME
    from unimodal_free.store.weights import load_weights
    from unimodal_free.train.checkpoint_manager import CheckpointManager

    base.mkdir(parents=True, exist_ok=True)
    run_dir = stage_run(0, base)
    cfg = load_config(run_dir / "config.json")
    assert cfg.train.max_steps == MAX_STEPS and cfg.deepspeed.zero_stage == 0

    tags = scalar_tags(run_dir)
    required = {
        "train/loss", "train/ema_decay", "train/lr", "train/grad_norm", "train/samples_per_s",
        "train/elements_per_s", "train/mfu", "train/skipped_samples", "train/skipped_steps", "train/padding_waste",
    }
    for m in MODALITIES:
        required |= {f"train/loss/{m}", f"train/target_std/{m}", f"train/pred_std/{m}", f"train/rows/{m}",
                     f"train/rows_per_s/{m}"}
    for a in MODALITIES:
        for b in MODALITIES:
            if a != b:
                required |= {f"val/{a}_to_{b}_R@{k}" for k in (1, 5, 10)}
    # The demo's labels: k-NN for every modality, zero-shot for pictures and recordings (eval.label_metrics).
    for field in ("shape", "colour", "size", "position"):
        required |= {f"val/{m}_{field}_knn_top1" for m in MODALITIES}
        required |= {f"val/{m}_{field}_zeroshot_top1" for m in ("image", "speech")}
    required.add("val/label_seconds")
    assert not required - tags, f"missing tags: {sorted(required - tags)}"
    assert all(0 <= v <= 1 for _, v in scalars(run_dir, "val/image_shape_knn_top1"))
    # x-axis = optimizer step, one point per step for per-step tags; eval every 4 steps.
    assert [s for s, _ in scalars(run_dir, "train/lr")] == list(range(1, MAX_STEPS + 1))
    assert [s for s, _ in scalars(run_dir, "val/image_to_text_R@1")] == [4, 8]
    mfu = [v for _, v in scalars(run_dir, "train/mfu")]
    assert all(0 < v < 1 for v in mfu), mfu
    assert [v for _, v in scalars(run_dir, "train/skipped_steps")] == [0.0] * MAX_STEPS
    lr = [v for _, v in scalars(run_dir, "train/lr")]
    assert lr[0] < lr[1]  # warmup
    seen = dict(scalars(run_dir, "train/samples_seen"))  # rows over both ranks, growing every step
    assert all(seen[s] < seen[s + 1] for s in range(1, MAX_STEPS))
    rows = [dict(scalars(run_dir, f"train/rows/{m}")) for m in MODALITIES]  # this step's rows, all ranks
    assert all(sum(r[s] for r in rows) == seen[s] - seen.get(s - 1, 0.0) for s in seen)
    epoch = dict(scalars(run_dir, "train/epoch"))
    assert all(epoch[s] == pytest.approx(seen[s] / cfg.data.epoch_samples) for s in seen)

    ckpt = CheckpointManager(run_dir, keep_last=MAX_STEPS)
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step00000008"
    assert ckpt.complete_tags() == [f"step{s:08d}" for s in range(1, MAX_STEPS + 1)]  # (pruning: resume test)
    assert all(is_complete(run_dir / "checkpoints" / t) for t in ckpt.complete_tags())

    exported = load_weights(run_dir / EXPORT_NAME)
    from_run = load_weights(run_dir)
    assert exported.step == from_run.step == MAX_STEPS
    assert exported.tokenizer_ref == from_run.tokenizer_ref and exported.tokenizer_ref["kind"] == "sentencepiece"
    for k in exported.student:
        assert torch.equal(exported.student[k], from_run.student[k]), k
        assert torch.equal(exported.teacher[k], from_run.teacher[k]), k
    # The exported weights load into a freshly built model of the recorded config.
    from unimodal_free.batch import modality_specs
    from unimodal_free.data.reading.tokenizer import load_tokenizer
    from unimodal_free.model import build_model

    tok = load_tokenizer(exported.tokenizer_ref["path"])
    model = build_model(exported.cfg.model, exported.cfg.objective, modality_specs(exported.cfg.data, tok.vocab_size))
    model.load_state_dict(exported.teacher)

    # The launch's log (stdout and stderr to a file, as a cluster job's): one plain line per step from rank 0,
    # no bar, no rank-side DeepSpeed noise; run_dir/log.txt has the same lines between a start and an end line.
    from unimodal_free.train.textlog import parse_fields

    def step_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("step ") and "  loss " in line]

    text = (base / "zero0.log").read_text(errors="replace")
    assert "\r" not in text
    lines = step_lines(text)
    assert [parse_fields(line)["step"] for line in lines] == [f"{s}/{MAX_STEPS}" for s in range(1, MAX_STEPS + 1)]
    log = (run_dir / "log.txt").read_text().splitlines()
    assert step_lines("\n".join(log)) == lines
    start, end = parse_fields(log[0]), parse_fields(log[-1])
    assert start["world_size"] == "2" and "launch/train.py --config configs/tiny.json --set" in start["command"]
    assert end["step"] == f"{MAX_STEPS}/{MAX_STEPS}" and end["exit"] == "0" and end["reason"] == "done"
    assert not [line for line in RANK_NOISE[1:] if line in text], text[:3000]
    # The launcher's runner and launch.py print it before our code runs (2); the ranks no more (were 2 more).
    assert text.count(RANK_NOISE[0]) <= 2, text[:3000]


RANK_NOISE = (  # DeepSpeed's start-up lines in a rank (unimodal_free/train/ds_noise.py)
    "Setting accelerator to CPU",
    "No CUDA runtime is found",
    "deepspeed_shm_comm_op built successfully",
    "You are using ZeRO with an untested optimizer",
)


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_deepspeed_start_up_noise_only_when_asked(base, verbose):
    """One rank, ZeRO-1, as a process: DeepSpeed's start-up lines (accelerator detection, the CUDA runtime
    probe, the shm op's print, the untested-optimizer warning) are absent by default and all there with
    log.deepspeed_verbose=true."""
    base.mkdir(parents=True, exist_ok=True)
    warm_up_deepspeed()
    data = tiny_data(base)
    name = f"noise-verbose-{verbose}"
    cmd = train_cmd(data, base / name, 1, "train.max_steps=1", "eval.every=0",
                    f"log.deepspeed_verbose={str(verbose).lower()}", launcher=False)
    log = base / f"{name}.log"
    assert run(cmd, log) == 0, tail(log)
    text = log.read_text(errors="replace")
    shown = [line for line in RANK_NOISE if line in text]
    assert shown == (list(RANK_NOISE) if verbose else []), text[:3000]
    assert "step 1/1  loss " in text


@pytest.mark.slow
@needs_launcher
def test_run_tensorboard_figures_projector_config_text_and_eval_beside_it(base, tmp_path):
    """A real 2-rank run's event files read back: a similarity figure per modality pair at every eval step,
    the final projector's metadata with the captions, the resolved config as text at step 0; then the
    docs/INSTALL.md's eval command pointed at (a copy of) that tb/ leaves the training projector config as it was."""
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from unimodal_free.eval.cli import main as eval_main

    run_dir = stage_run(0, base)
    tb = tmp_path / "tb"
    shutil.copytree(run_dir / "tb", tb)
    acc = EventAccumulator(str(tb), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    pairs = ("image_speech", "image_text", "speech_text")
    assert {f"val/similarity/{p}" for p in pairs} <= set(acc.Tags()["images"])
    for p in pairs:
        events = acc.Images(f"val/similarity/{p}")
        assert [e.step for e in events] == [4, 8]
        assert all((e.width, e.height) == (560, 480) for e in events)
        assert Image.open(io.BytesIO(events[-1].encoded_image_string)).size == (560, 480)
    # The resolved config, as TensorBoard's text tab shows it, at step 0.
    (config_event,) = acc.Tensors("config/text_summary")
    text = config_event.tensor_proto.string_val[0].decode()
    assert config_event.step == 0 and text.startswith("unimodal_free ")
    resolved = json.loads(text.split("```json\n", 1)[1].rsplit("\n```", 1)[0])
    assert resolved == json.loads((run_dir / "config.json").read_text())
    # The final eval's projector: every point labelled with modality, pair and caption.
    projector = (tb / "projector_config.pbtxt").read_text()
    (tsv,) = tb.glob(f"{MAX_STEPS:05d}/*/metadata.tsv")
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    assert rows[0] == ["modality", "pair", "caption", "key"]
    assert {r[0] for r in rows[1:]} == {"image", "speech", "text"} and all(len(r) == 4 for r in rows)
    heldout = tiny_data(base) / "heldout"
    assert all(r[2] != "-" and len(r[2].split()) >= 3 for r in rows[1:])  # the demo's captions are sentences
    image_caption = {r[1]: r[2] for r in rows[1:] if r[0] == "image"}
    assert all(image_caption[r[1]] == r[2] for r in rows[1:] if r[0] == "text" and r[1] in image_caption)

    assert eval_main(["--checkpoint", str(run_dir), "--data", str(heldout), "--max-samples", "8",
                      "--logdir", str(tb)]) == 0
    assert (tb / "projector_config.pbtxt").read_text() == projector
    assert (tb / f"eval-step{MAX_STEPS:08d}-teacher" / "projector_config.pbtxt").is_file()


def test_bad_config_exits_2_with_one_line_before_any_process_group(tmp_path, capsys):
    """In-process: main() returns 2, prints one line naming the key, starts no process group."""
    import torch.distributed as dist

    from unimodal_free.train import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"max_step": 3}}))
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.max_step: unknown key" in err[0], err
    assert not dist.is_initialized()

    assert main(["--config", str(bad), "--set", "train.max_step=3"]) == 2  # same through --set
    assert main(["--set", "deepspeed.extra={\"train_batch_size\": 7}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "deepspeed.extra.train_batch_size" in err[1], err
    missing = ["--set", f"data.train={tmp_path / 'nowhere'}", "--set", "data.heldout=also-nowhere"]
    assert main(missing + ["--set", f"train.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0], err
    assert not dist.is_initialized()


def test_bad_config_through_the_script_exits_2(tmp_path):
    """As a process: exit status 2 and exactly one stderr line, fast (no DeepSpeed/process group start)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "launch/train.py", "--config", "configs/tiny.json", "--set", "deepspeed.zero_stage=4"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--set deepspeed.zero_stage=4: 4 is not one of" in lines[0], proc.stderr
    assert time.perf_counter() - t0 < 60


@pytest.mark.slow
@needs_launcher
def test_sigterm_to_one_rank_saves_and_all_exit_0(base):
    """SIGTERM to rank 1 only: both ranks stop at the same step after a complete checkpoint; exit 0."""
    from unimodal_free.store.checkpoints import is_complete, step_of
    from unimodal_free.train.checkpoint_manager import CheckpointManager

    base.mkdir(parents=True, exist_ok=True)
    warm_up_deepspeed()
    data = tiny_data(base)
    run_dir = base / "sigterm"
    log = base / "sigterm.log"
    cmd = train_cmd(data, run_dir, 1, "train.max_steps=400", "train.checkpoint_every=3", "eval.every=0")
    proc = start(cmd, log)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "latest").exists():  # step 3 checkpoint: training is under way
            assert proc.poll() is None, tail(log)
            assert time.monotonic() < deadline, tail(log)
            time.sleep(0.2)
        ranks = [  # rank 1 itself, not its forked DataLoader worker (same command line)
            p for p in psutil.Process(proc.pid).children(recursive=True)
            if "--local_rank=1" in p.cmdline() and "deepspeed.launcher.launch" in p.parent().cmdline()
        ]
        assert len(ranks) == 1, [p.cmdline() for p in psutil.Process(proc.pid).children(recursive=True)]
        ranks[0].send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert rc == 0, tail(log)
    assert "on request (signal); checkpoint saved" in text
    end = (run_dir / "log.txt").read_text().splitlines()[-1]
    assert end.startswith("end ") and end.endswith("  exit 0  reason signal"), end
    tag = CheckpointManager(run_dir).latest_tag()
    assert tag is not None and is_complete(run_dir / "checkpoints" / tag)
    stopped = step_of(tag)
    assert 3 < stopped < 400
    state = json.loads((run_dir / "checkpoints" / tag / "trainer_state.json").read_text())
    assert state["step"] == stopped and state["micro_batches"] == stopped
    assert not (run_dir / "model.safetensors").exists()  # no export for an interrupted run
