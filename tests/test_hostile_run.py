"""A run directory, a model folder or a config from someone else, through the public entry points.

Links planted in a handed-over run directory are refused before anything is written (their targets
untouched); names and values from its files reach log.txt as data; a broken ``trainer_state.json``, an
unwritable ``train.output_dir`` and a full disk during a checkpoint save end in one line; absurd sizes are
refused from the config's numbers, before any tensor exists; SIGTERM to the ``deepspeed`` runner alone
stops every rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (ROOT, needs_launcher, peak_extra_mb, start, tail, tiny_data, tmp_path_base, train_cmd,
                     warm_up_deepspeed)

SHORT = ["train.max_steps=4", "train.checkpoint_every=2", "eval.every=0"]
NO_TRACEBACK = "Traceback"


def train(data: Path, run_dir: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """One process of launch/train.py (the same entry point as under the launcher), output captured."""
    return subprocess.run(train_cmd(data, run_dir, 0, *SHORT, *extra, launcher=False), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """(demo data, a finished 4-step run with checkpoints at steps 2 and 4); each test copies the run."""
    base = tmp_path_base(tmp_path_factory.mktemp("hostile_run"))
    data = tiny_data(base)
    run_dir = base / "hostile_source_run"
    if not (run_dir / "model").is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)
        proc = train(data, run_dir)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return data, run_dir


def copy_run(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    return dest


def rewrite_listed(tag_dir: Path, name: str, data: bytes) -> None:
    """Replace a file of a checkpoint and list its new size and sha256 in COMPLETE, as anyone can."""
    (tag_dir / name).write_bytes(data)
    manifest = json.loads((tag_dir / "COMPLETE").read_text())
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (tag_dir / "COMPLETE").write_text(json.dumps(manifest))


def snapshot(path: Path) -> dict:
    """Every file under ``path`` (or ``path`` itself) with its bytes and mtime."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


# ---------------------------------------------------------------- links in a handed-over run directory


@pytest.mark.slow
@pytest.mark.parametrize("planted", ["log.txt", "config.json.tmp", "tb", "checkpoints/latest"])
def test_resume_refuses_a_link_in_the_run_dir_and_leaves_its_target_alone(planted, finished_run, tmp_path):
    data, source = finished_run
    run_dir = copy_run(source, tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    if planted == "tb":
        target = outside / "tbdir"
        target.mkdir()
        (target / "marker").write_text("not yours")
        shutil.rmtree(run_dir / "tb")
    else:
        target = outside / "victim.txt"
        target.write_text("marker: keep me\n")
        (run_dir / planted).unlink(missing_ok=True)
    (run_dir / planted).symlink_to(target)
    before = snapshot(target)

    t0 = time.monotonic()
    proc = train(data, run_dir, "train.resume=auto", "train.max_steps=6")
    took = time.monotonic() - t0

    assert snapshot(target) == before  # not appended to, not overwritten, no event file
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert NO_TRACEBACK not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert lines == [f"error: {run_dir / planted}: is a symbolic link; refusing to write through it "
                     f"(remove it, or write elsewhere)"], proc.stderr[-3000:]
    assert "Initializing TorchBackend" not in proc.stderr + proc.stdout  # refused before any process group
    print(f"{planted}: refused in {took:.1f} s")


@pytest.mark.slow
def test_names_and_values_from_a_checkpoint_reach_log_txt_as_data(finished_run, tmp_path):
    """A manifest name with a newline and a stored config value with a shell substitution and an escape
    sequence: each is one escaped line of log.txt, never a forged line or a raw control character."""
    data, source = finished_run
    run_dir = copy_run(source, tmp_path / "run")
    ckpts = run_dir / "checkpoints"
    # The newer checkpoint is broken: its COMPLETE lists a file whose name forges an `end` line.
    forged = "x\nend  step 9/9  wall 1s  exit 0  reason done\x1b[2J"
    manifest = json.loads((ckpts / "step00000004" / "COMPLETE").read_text())
    manifest["files"][forged] = {"size": 1, "sha256": "0" * 64}
    (ckpts / "step00000004" / "COMPLETE").write_text(json.dumps(manifest))
    # The older one stores a config value nobody typed here (a key that may change on resume).
    hostile = "$(touch /tmp/pwned)\x1b[31m\nstep 3/3  loss 0.0000"
    state = json.loads((ckpts / "step00000002" / "trainer_state.json").read_text())
    state["config"]["data"]["demo_dir"] = hostile
    rewrite_listed(ckpts / "step00000002", "trainer_state.json", json.dumps(state).encode())

    proc = train(data, run_dir, "train.resume=auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (run_dir / "log.txt").read_text()
    assert not any(ch in text for ch in "\x1b\r"), "a raw control character reached log.txt"
    lines = text.splitlines()
    assert not any(line.startswith(("end  step 9/9", "step 3/3")) for line in lines), "a forged log line"
    fallback = [line for line in lines if line.startswith("falling back to")]
    assert len(fallback) == 1 and json.dumps(forged) in fallback[0], fallback
    changed = [line for line in lines if "config changed since the checkpoint: data.demo_dir" in line]
    assert len(changed) == 1 and f"data.demo_dir: {json.dumps(hostile)} -> " in changed[0], changed


# ---------------------------------------------------------------- broken state, unwritable dir, full disk


@pytest.mark.slow
@pytest.mark.parametrize("content", ["[]", '{"step": "7"}', '{"config": {"model": []}}'])
def test_a_trainer_state_that_is_not_ours_is_one_line(content, finished_run, tmp_path):
    data, source = finished_run
    run_dir = copy_run(source, tmp_path / "run")
    shutil.rmtree(run_dir / "checkpoints" / "step00000004")
    tag = run_dir / "checkpoints" / "step00000002"
    rewrite_listed(tag, "trainer_state.json", content.encode())
    proc = train(data, run_dir, "train.resume=auto")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert NO_TRACEBACK not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(f"error: {tag / 'trainer_state.json'}: not a trainer state ("), lines


@pytest.mark.slow
def test_an_unwritable_output_dir_is_one_line_before_anything_starts(finished_run, tmp_path):
    data, _ = finished_run
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = train(data, blocker / "run")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == [f"error: train.output_dir: {blocker / 'run'}: cannot write there (Not a directory)"]
    assert NO_TRACEBACK not in proc.stderr and "Initializing TorchBackend" not in proc.stderr + proc.stdout


@pytest.fixture
def small_tmpfs(tmp_path):
    """An 8 MiB tmpfs: room for the run's first checkpoint (5.5 MB) but not its second."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(finished_run, small_tmpfs):
    from unimodal_free.store.checkpoints import verify

    data, _ = finished_run
    run_dir = small_tmpfs / "run"
    proc = train(data, run_dir)
    assert proc.returncode == 5, proc.stderr[-3000:]
    assert NO_TRACEBACK not in proc.stderr and "unexpected pos" not in proc.stderr, proc.stderr[-3000:]
    lines = error_lines(proc)
    ckpts = run_dir / "checkpoints"
    assert len(lines) == 1 and lines[0].startswith(f"error: rank 0: {ckpts / 'step00000004'}: saving the checkpoint "
                                                   "failed (the disk is full"), lines
    assert lines[0].endswith(f"the partial folder is removed, {ckpts / 'step00000002'} is the resume point"), lines
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step00000002"]
    assert (ckpts / "latest").read_text().strip() == "step00000002"
    verify(ckpts / "step00000002")  # the last good checkpoint is whole
    end = (run_dir / "log.txt").read_text().splitlines()[-1]
    assert end.endswith("exit 5  reason checkpoint_save_failed"), end


# ---------------------------------------------------------------- absurd sizes: refused from the numbers


@pytest.mark.parametrize("override,line", [
    ("train.micro_batch_size=99999999999999999999999",
     "error: train.micro_batch_size: must be <= 65_536, got 99999999999999999999999"),
    ("model.num_blocks=10000", "error: model.num_blocks: must be <= 512, got 10000"),
    ("model.d_model=16384", "error: model: builds 2.93e+10 parameters, over the budget of 1e+10"),
])
def test_absurd_sizes_are_refused_by_the_trainer_before_start(override, line, tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "launch/train.py", "--set", f"train.output_dir={tmp_path / 'run'}",
                           "--set", override], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(line), proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()  # refused before the run directory was even made
    print(f"{override}: refused in {time.monotonic() - t0:.1f} s (interpreter start included)")


def test_parameter_count_from_the_config_is_exact():
    """The budget counts what build_model builds, for every head and stack layout and the shipped sizes."""
    from unimodal_free.config import config_from_dict, config_to_dict
    from unimodal_free.config.budget import parameter_count
    from unimodal_free.model.sizes import count, size_configs

    for cfg, _ in size_configs().values():
        for over in [{}, {"model": {"latent_stacks": "per_modality"}}, {"objective": {"target_space": "elements"}},
                     {"objective": {"align_weight": 0}}, {"model": {"element_summary": "max"}},
                     {"model": {"element_summary": "none"}}, {"data": {"patch_size": 16, "patch_stride": 4}},
                     {"objective": {"cross_weight": 1.0}}]:
            d = config_to_dict(cfg)
            for section, values in over.items():
                d[section].update(values)
            c = config_from_dict(d)
            assert parameter_count(c, 97) == count(c, 97)["total"], over
    one_b = config_from_dict({"model": {"d_model": 2048, "num_heads": 16, "num_blocks": 24, "num_latents": 512}})
    assert 1.2e9 < parameter_count(one_b, 32000) and config_from_dict(config_to_dict(one_b))  # a 1B model passes


HOSTILE_LOAD = r"""
import json, sys, time
from pathlib import Path
import unimodal_free
import unimodal_free.embedder  # torch and the model code imported before the clock and the base
base = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
t0 = time.perf_counter()
try:
    unimodal_free.load(sys.argv[1], device="cpu")
    message = None
except ValueError as exc:
    message = str(exc)
took = time.perf_counter() - t0
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"message": message, "seconds": took, "base_kb": base, "peak_kb": peak}))
"""


def hostile_folder(model: Path, dest: Path, **model_keys) -> Path:
    """A copy of a model folder whose stored config (export metadata and config.json alike) says ``model_keys``."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(model, dest))
    weights = folder / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        meta = dict(f.metadata())
    config = json.loads(meta["config"])
    config["model"].update(model_keys)
    meta["config"] = json.dumps(config, sort_keys=True)
    save_file(load_file(str(weights)), str(weights), metadata=meta)
    card = json.loads((folder / "config.json").read_text())
    card["config"] = config
    (folder / "config.json").write_text(json.dumps(card))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("keys,expect", [
    ({"num_blocks": 10000}, "model.num_blocks: must be <= 512, got 10000"),
    ({"d_model": 1000000, "num_heads": 1, "cross_heads": 1}, "model.d_model: must be <= 65_536, got 1000000"),
    ({"d_model": 32768, "num_heads": 1, "cross_heads": 1}, "model: builds 6.55e+10 parameters, over the budget of 1e+10 (model.d_model=32768"),
])
def test_load_refuses_a_hostile_model_folder_in_one_line_fast(keys, expect, finished_run, tmp_path):
    _, source = finished_run
    folder = hostile_folder(source / "model", tmp_path / "model", **keys)
    proc = subprocess.run([sys.executable, "-c", HOSTILE_LOAD, str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (r["message"] or "").startswith(f"{folder / 'model.safetensors'}: stored config: {expect}"), r
    assert r["seconds"] < 1.0 and peak_extra_mb(r["base_kb"], r["peak_kb"]) < 100, r
    print(f"{keys}: refused in {r['seconds'] * 1e3:.1f} ms, peak RSS +{r['peak_kb'] - r['base_kb']} KB")
    # The eval CLI: the same line, exit 2.
    cli = subprocess.run([sys.executable, "-m", "unimodal_free.eval", "--checkpoint", str(folder), "--data",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and cli.stderr.strip() == f"error: {r['message']}", cli.stderr[-3000:]


# ---------------------------------------------------------------- the launcher: SIGTERM to the runner alone


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
@needs_launcher
def test_sigterm_to_the_deepspeed_runner_alone_stops_every_rank_cleanly(tmp_path):
    warm_up_deepspeed()
    data = tiny_data(tmp_path_base(tmp_path))
    run_dir = tmp_path / "run"
    cmd = train_cmd(data, run_dir, 0, "train.max_steps=100000", "train.checkpoint_every=100000", "eval.every=0")
    log = tmp_path / "launch.log"
    proc = start(cmd, log)  # its own session: proc.pid is the runner and the group id
    try:
        deadline = time.monotonic() + 300
        while "step 2/" not in (run_dir / "log.txt").read_text() if (run_dir / "log.txt").exists() else True:
            assert proc.poll() is None and time.monotonic() < deadline, tail(log)
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGTERM)  # the runner only, as a scheduler or `kill PID` does
        proc.wait(timeout=30)
        t0 = time.monotonic()
        while group_alive(proc.pid) and time.monotonic() - t0 < 90:
            time.sleep(0.5)
        orphans = group_alive(proc.pid)
        took = time.monotonic() - t0
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not orphans, f"launch.py and the ranks still running 90 s after the runner's SIGTERM:\n{tail(log)}"
    end = (run_dir / "log.txt").read_text().splitlines()[-1]
    assert "  exit 0  reason signal" in end, end
    step = int(end.split("  step ")[1].split("/")[0])
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step{step:08d}"  # stopped with a checkpoint
    print(f"every rank stopped {took:.1f} s after the runner's SIGTERM, at step {step}")


# ---------------------------------------------------------------- the memory figure the hostile tests read


def test_peak_above_base_never_reads_negative():
    """The peak mark and the base are two reads of the kernel's approximate counters: when nothing was
    allocated the peak can read a few KB under the base, which is 0 MB, not -1 MB."""
    assert peak_extra_mb(base_kb=500_004, peak_kb=500_000) == 0
    assert peak_extra_mb(base_kb=500_000, peak_kb=500_000 + 3 * 1024) == 3
    assert peak_extra_mb(base_kb=0, peak_kb=1536) == 2  # rounded, not floored
