"""Failure handling in real runs: non-finite losses are skipped on every rank and counted, K in a row
stop the run after a checkpoint (exit 4); the collapse guard stops with its message (exit 3); a bad
config or a resume that changes a fixed key exits 2 with one line before anything starts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import torch

from helpers import (
    ROOT,
    leftover_shm,
    needs_launcher,
    run,
    scalars,
    start,
    tail,
    tiny_data,
    train_cmd,
    undecodable_shards,
    warm_up_deepspeed,
)
from train_callbacks import with_callbacks


@pytest.mark.slow
@needs_launcher
@pytest.mark.parametrize("stage", [0, 2])  # 0: the optimizer's own check; 2: DeepSpeed's overflow check
def test_nonfinite_steps_are_skipped_on_all_ranks_and_stop_the_run(stage, tmp_path_factory):
    from unimodal_free.batch import modality_specs
    from unimodal_free.data.reading.tokenizer import load_tokenizer
    from unimodal_free.model import build_model
    from unimodal_free.store.weights import load_weights
    from unimodal_free.train.checkpoint_manager import CheckpointManager

    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    warm_up_deepspeed()
    data = tiny_data(base)
    run_dir = base / f"nonfinite{stage}"
    log = base / f"nonfinite{stage}.log"
    cmd = train_cmd(
        data, run_dir, stage,
        "train.checkpoint_every=1", "train.keep_last=10", "train.max_nonfinite_in_row=2", "eval.every=0",
    )
    # Rank 1 alone gets a NaN loss at steps 2, 4 and 5; rank 0 must skip the same steps.
    rc = run(with_callbacks(cmd, "--nan-loss", "1:2,4,5"), log)
    assert rc == 4, tail(log)
    assert "2 non-finite steps in a row" in log.read_text(errors="replace")
    # Plain lines: an interval without an applied step says `loss nan` and counts the skipped steps;
    # the end line gives the exit status and why.
    from unimodal_free.train.textlog import parse_fields

    text_log = (run_dir / "log.txt").read_text().splitlines()
    steps = [parse_fields(line) for line in text_log if line.startswith("step ") and "  loss " in line]
    assert [(f["step"], f["loss"] == "nan", f.get("skipped_steps")) for f in steps] == [
        ("1/8", False, None), ("2/8", True, "1"), ("3/8", False, "1"), ("4/8", True, "2"), ("5/8", True, "3")]
    end = parse_fields(text_log[-1])
    assert (end["step"], end["exit"], end["reason"]) == ("5/8", "4", "nonfinite"), text_log[-1]

    assert scalars(run_dir, "train/skipped_steps") == [(1, 0.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 3.0)]
    assert [s for s, _ in scalars(run_dir, "train/loss")] == [1, 3]  # poisoned steps log no loss
    lr = dict(scalars(run_dir, "train/lr"))
    assert lr[2] == lr[3] and lr[3] < lr[4] == lr[5]  # the LR schedule advances only on applied steps

    ckpt = CheckpointManager(run_dir)
    assert ckpt.latest_tag() == "step00000005"  # the stop saved the last good weights
    state = json.loads((run_dir / "checkpoints" / "step00000005" / "trainer_state.json").read_text())
    assert state["skipped_steps"] == 3 and state["nonfinite_in_row"] == 2

    w = {s: load_weights(run_dir / "checkpoints" / f"step{s:08d}") for s in range(1, 6)}
    # Parameters only: buffers such as BatchNorm running statistics move in every forward.
    model = build_model(w[1].cfg.model, w[1].cfg.objective, modality_specs(w[1].cfg.data, load_tokenizer(w[1].tokenizer_ref["path"]).vocab_size))
    params = [name for name, _ in model.named_parameters()]

    def same(a, b, which):
        return all(torch.equal(getattr(a, which)[k], getattr(b, which)[k]) for k in params)

    for which in ("student", "teacher"):  # skipped steps change neither the student nor the EMA teacher
        assert same(w[1], w[2], which) and same(w[3], w[4], which) and same(w[4], w[5], which), which
        assert not same(w[2], w[3], which), which
    assert all(torch.isfinite(v).all() for v in w[5].student.values())


@pytest.mark.slow
def test_collapse_guard_stops_with_its_message(tmp_path_factory):
    """One process without the launcher (same entry point): exit 3 and the guard's message.

    Its steps hold 2-3 rows per modality (8-row micro-batches, logged every step): below the default
    objective.collapse_min_rows (8), so the test lowers it to let the guard judge at step 2.
    """
    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    data = tiny_data(base)
    run_dir = base / "collapse"
    log = base / "collapse.log"
    cmd = train_cmd(
        data, run_dir, 0, "objective.collapse_warmup_steps=2", "objective.min_target_std=1000.0", "eval.every=0",
        "objective.collapse_min_rows=2", launcher=False,
    )
    assert run(cmd, log) == 3, tail(log)
    text = log.read_text(errors="replace")
    assert "representation collapse at step 2: target_std of modality" in text
    assert "objective.min_target_std=1000.0" in text
    assert [s for s, _ in scalars(run_dir, "train/loss")] == [1, 2]
    end = (run_dir / "log.txt").read_text().splitlines()[-1]
    assert end.startswith("end ") and "  step 2/8  " in end and end.endswith("  exit 3  reason collapse"), end


@pytest.mark.slow
@needs_launcher
def test_bad_config_under_the_launcher_exits_2_on_every_rank_before_any_process_group(tmp_path, tmp_path_factory):
    """`deepspeed launch/train.py` with a value that used to fail after start: the launcher exits 2 (it returns
    the first failing rank's code) and every rank's own log is the one line, no traceback, no process group."""
    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    ranks = tmp_path / "ranks"
    cmd = train_cmd(tiny_data(base), tmp_path / "run", 0, "model.cross_heads=3")
    cmd = cmd[:1] + [f"--enable_each_rank_log={ranks}"] + cmd[1:]
    log = tmp_path / "launch.log"
    assert run(cmd, log, timeout=300) == 2, tail(log)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Initializing TorchBackend" not in text, tail(log)
    logs = {p.name: p.read_text().splitlines() for p in sorted(ranks.glob("*_rank*.log"))}
    assert len(logs) == 2, logs
    line = "error: --set model.cross_heads=3: 3 does not divide model.d_model=64"
    # A rank the launcher kills (it stops the rest once one rank exits non-zero) may not have printed yet.
    assert all(lines in ([line], []) for lines in logs.values()) and [line] in logs.values(), logs


@pytest.mark.slow
@needs_launcher
def test_busy_master_port_is_one_line_naming_master_port(tmp_path, tmp_path_factory):
    """`deepspeed --master_port P` while another process listens on P (a second run on the default 29500):
    exit 2 and one line that says what to pass, not torch's DistNetworkError traceback."""
    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    cmd = train_cmd(tiny_data(base), tmp_path / "run", 0)
    cmd[cmd.index("--num_gpus") + 1] = "1"
    log = tmp_path / "launch.log"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd[cmd.index("--master_port") + 1] = str(port)
        assert run(cmd, log, timeout=300) == 2, tail(log)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "DistNetworkError" not in text, tail(log)
    assert _error_lines(log) == [f"error: port {port} is in use (another run?): pass --master_port PORT to deepspeed"], \
        tail(log)


@pytest.mark.slow
def test_resume_refuses_changed_fixed_keys_in_one_line(tmp_path_factory):
    """A real 2-step run, resumed with a changed model shape and loader layout: exit 2, one line naming
    every key that cannot change, nothing built (no traceback, the checkpoints untouched)."""
    base = tmp_path_factory.getbasetemp() / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    data = tiny_data(base)
    run_dir = base / "resume_fixed"
    log = base / "resume_fixed.log"
    short = ["train.max_steps=2", "train.checkpoint_every=2", "eval.every=0"]
    assert run(train_cmd(data, run_dir, 0, *short, launcher=False), log) == 0, tail(log)
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())

    proc = subprocess.run(
        train_cmd(data, run_dir, 0, *short, "train.resume=auto", "model.d_model=32", "data.num_workers=0",
                  "train.max_steps=4", launcher=False),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "cannot change on resume: model.d_model: 64 -> 32; data.num_workers: 1 -> 0 (" in lines[0], lines
    assert "max_steps" not in lines[0]  # a key that may change is not named
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


# ---------------------------------------------------------------- bad data: no endless loop, no hang


def _error_lines(log) -> list[str]:
    """Every 'error: ...' line (the progress bar's carriage returns may precede one)."""
    return re.findall(r"error: [^\r\n]*", log.read_text(errors="replace"))


def _run_timed(cmd, log, env=None) -> tuple[int, float, float]:
    """(exit code, seconds from start, seconds from the first skipped-sample warning) of a run."""

    proc = start(cmd, log, env)
    t0, first_skip = time.monotonic(), None
    try:
        while proc.poll() is None:
            if first_skip is None and "skipped" in log.read_text(errors="replace"):
                first_skip = time.monotonic()
            assert time.monotonic() - t0 < 300, tail(log)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    end = time.monotonic()
    return proc.returncode, end - t0, end - (first_skip or t0)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["undecodable_members", "max_text_tokens_0"])
def test_source_without_a_decodable_sample_exits_2_with_one_line(case, tmp_path):
    """Readable tars whose every sample fails to decode (or decodes to no tokens) used to loop forever."""

    data = tiny_data(tmp_path_factory_base(tmp_path))
    source = undecodable_shards(tmp_path / "u") if case == "undecodable_members" else data / "train"
    extra = [f"data.train={source}", "eval.every=0"]
    if case == "max_text_tokens_0":
        extra.append("data.max_text_tokens=0")
    log = tmp_path / "run.log"
    rc, took, after_skip = _run_timed(train_cmd(data, tmp_path / "run", 0, *extra, launcher=False), log)
    assert rc == 2, tail(log)
    lines = _error_lines(log)
    assert len(lines) == 1, tail(log)
    if case == "undecodable_members":
        assert repr(str(source)) in lines[0] and "no decodable sample in the last 20000 read" in lines[0], lines
        assert "image: not an image PIL can identify" in lines[0], lines
    else:  # either the config check (before start) or the reader names it
        assert "max_text_tokens" in lines[0] or "text: no tokens" in lines[0], lines
    print(f"{case}: exit 2 {took:.1f} s after start, {after_skip:.1f} s after the first skip")


def tmp_path_factory_base(tmp_path):
    base = tmp_path.parent / "train_runs"
    base.mkdir(parents=True, exist_ok=True)
    return base


@pytest.mark.slow
def test_sigterm_while_waiting_for_data_stops_the_run(tmp_path):
    """The stop flag used to be read only between steps: a rank skipping samples forever ignored SIGTERM."""

    data = tiny_data(tmp_path_factory_base(tmp_path))
    source = undecodable_shards(tmp_path / "u")
    log = tmp_path / "run.log"
    cmd = train_cmd(data, tmp_path / "run", 0, f"data.train={source}", "eval.every=0",
                    "data.max_skips_in_row=1000000000", launcher=False)
    proc = start(cmd, log)
    try:
        deadline = time.monotonic() + 300
        while "skipped" not in log.read_text(errors="replace"):  # the reader is in its skip loop
            assert proc.poll() is None and time.monotonic() < deadline, tail(log)
            time.sleep(0.2)
        time.sleep(2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        print(f"exit {rc} {time.monotonic() - t0:.1f} s after SIGTERM")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 128 + signal.SIGTERM, tail(log)
    assert "stopped while waiting for data" in log.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("ranks,workers", [(1, 2), pytest.param(2, 1, marks=needs_launcher)])
def test_zero_byte_shard_ends_every_rank_with_exit_2(ranks, workers, tmp_path):
    """A worker error (one zero-byte shard) used to hang the rank at exit, in multiprocessing's join."""
    if ranks == 2:
        warm_up_deepspeed()
    data = tiny_data(tmp_path_factory_base(tmp_path))
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "z-000000.tar").write_bytes(b"")
    log = tmp_path / "run.log"
    cmd = train_cmd(data, tmp_path / "run", 0, f"data.train={tmp_path / 'z'}", f"data.num_workers={workers}",
                    "eval.every=0", launcher=ranks == 2)
    rc, took, after_skip = _run_timed(cmd, log)
    print(f"{ranks} rank(s), {workers} worker(s): exit {rc} {took:.1f} s after start, {after_skip:.1f} s after "
          "the first skip")
    assert not leftover_shm(cmd)
    assert rc == 2, tail(log)
    lines = _error_lines(log)
    assert lines and all("the last 50 shards read gave no sample" in line and "ReadError" in line for line in lines)
