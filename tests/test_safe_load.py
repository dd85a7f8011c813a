"""What a handed-over run directory can do to us: nothing.

One short real training (1 process, ZeRO-2, checkpoints at steps 1 and 2)
serves every check: its DeepSpeed files load with ``weights_only=True``
(also under ZeRO-0), a copy whose every pickle file carries a payload runs no
code in eval, query, ``JointEmbedder.load`` or resume, same-size corruption
of the teacher's weights is caught by sha256, and a broken only-checkpoint is
an error instead of a fresh start over it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import ROOT, tail, tiny_data, train_cmd


STEPS = 2
_runs: dict[int, Path] = {}


def trained(stage: int, base: Path) -> Path:
    """A finished 2-step run with a checkpoint per step (made once per stage for this module)."""
    if stage not in _runs:
        data = tiny_data(base)
        run_dir = base / f"safe_z{stage}"
        cmd = train_cmd(data, run_dir, stage, f"train.max_steps={STEPS}", "train.checkpoint_every=1",
                        "eval.every=0", launcher=False)
        log = base / f"safe_z{stage}.log"
        with open(log, "wb") as out:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=600).returncode
        assert rc == 0, tail(log)
        _runs[stage] = run_dir
    return _runs[stage]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("safe_load")


@pytest.fixture(scope="module")
def run_dir(base):
    return trained(2, base)


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def tags(run: Path) -> list[Path]:
    return sorted(p for p in (run / "checkpoints").iterdir() if p.is_dir() and p.name.startswith("step"))


def rewrite_manifest(tag_dir: Path) -> None:
    """What an attacker can do: a COMPLETE whose sizes and sha256 match the files; no signature (no key)."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(tag_dir.iterdir()) if p.is_file() and p.name != "COMPLETE"
    }
    (tag_dir / "COMPLETE").write_text(json.dumps({"step": int(tag_dir.name[4:]), "files": files}))


class Payload:
    """Unpickling it calls open(marker, 'w'): the marker file appears iff code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def poison(run: Path, marker: Path, keep_safetensors: bool) -> None:
    """Every pickle file of every checkpoint (DeepSpeed's model and optimizer states, the rank state,
    and a teacher.pt as older versions wrote) gets a payload next to its real content."""
    for tag_dir in tags(run):
        for path in sorted(tag_dir.glob("*.pt")):
            real = torch.load(path, map_location="cpu", weights_only=False)  # the trainer's own honest file
            real["payload"] = Payload(marker)
            torch.save(real, path)
        torch.save({"payload": Payload(marker), "w": torch.zeros(3)}, tag_dir / "teacher.pt")
        if not keep_safetensors:
            (tag_dir / "model.safetensors").unlink(missing_ok=True)
        rewrite_manifest(tag_dir)
    if not keep_safetensors:  # no safetensors anywhere: not the final export, not the model folder load() prefers
        (run / "model.safetensors").unlink(missing_ok=True)
        shutil.rmtree(run / "model", ignore_errors=True)


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip() and "[WARNING]" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def resume_cmd(run: Path, *extra: str, stage: int = 2) -> list[str]:
    data = tiny_data(run.parent)
    return train_cmd(data, run, stage, f"train.max_steps={STEPS + 1}", "train.checkpoint_every=1", "eval.every=0",
                     "train.resume=auto", *extra, launcher=False)


def launch(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ, **(env or {})))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [0, 2])
def test_deepspeed_files_load_weights_only_and_an_unsigned_honest_run_resumes(stage, base, tmp_path):
    """Every file the trainer writes needs nothing beyond the allow-list; resuming a copy under another
    user's key (unsigned for us) goes through the weights-only loader alone."""
    from unimodal_free.store.safe_load import load_weights_only, unsafe_globals

    run = copy_run(trained(stage, base), tmp_path / "run")
    for tag_dir in tags(run):
        for path in tag_dir.glob("*.pt"):
            assert unsafe_globals(path) == [], path
            assert isinstance(load_weights_only(path), dict)
    proc = launch(resume_cmd(run, stage=stage), env={"UNIMODAL_FREE_CHECKPOINT_KEY": str(tmp_path / "other.key")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'step00000002'} at step 2" in proc.stderr


@pytest.mark.slow
def test_hostile_pickles_run_no_code_anywhere(run_dir, base, tmp_path, capsys):
    from unimodal_free.eval.cli import main as eval_main
    from unimodal_free.eval.query import JointEmbedder
    from unimodal_free.eval.query import main as query_main

    marker = tmp_path / "PWNED"
    heldout = str(tiny_data(base) / "heldout")
    tok = str(tiny_data(base) / "tokenizer.model")

    # Only pickles: eval, query and load() refuse in one line (they read safetensors only).
    run = copy_run(run_dir, tmp_path / "pickles_only")
    poison(run, marker, keep_safetensors=False)
    for target in (run, run / "checkpoints" / "step00000002"):
        capsys.readouterr()
        assert eval_main(["--checkpoint", str(target), "--data", heldout, "--tokenizer", tok]) == 2
        assert "holds no model.safetensors" in one_line(capsys.readouterr().err)
        assert query_main(["--checkpoint", str(target), "--text", "a", "b", "--tokenizer", tok]) == 2
        assert "holds no model.safetensors" in one_line(capsys.readouterr().err)
        with pytest.raises(FileNotFoundError, match="holds no model.safetensors"):
            JointEmbedder.load(str(target), tokenizer=tok)
    assert not marker.exists()

    # Resume: refused before start, naming the file and the global, one line, exit 2.
    proc = launch(resume_cmd(run))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert "io.open" in line and "not signed with your key" in line and "--trust-checkpoint" in line, line
    assert not marker.exists()

    # Pickles poisoned, consolidations intact: eval, query and load() work and still run nothing.
    run = copy_run(run_dir, tmp_path / "with_safetensors")
    poison(run, marker, keep_safetensors=True)
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(run), "--data", heldout, "--tokenizer", tok]) == 0
    assert "step00000002" in capsys.readouterr().out
    assert query_main(["--checkpoint", str(run), "--text", "a", "b", "--tokenizer", tok]) == 0
    assert JointEmbedder.load(str(run), tokenizer=tok).step == STEPS
    assert not marker.exists()


def zero_teacher_block(tag_dir: Path) -> Path:
    """Zero 4 KB inside the teacher's largest tensor: same size, different bytes. Returns the file.

    The teacher lives in the checkpoint's model.safetensors (teacher.pt before it, where a block in the
    middle of the file is zeroed: what the revert check against the old code corrupts).
    """
    path = tag_dir / "teacher.pt"
    raw = bytearray((path if path.exists() else tag_dir / "model.safetensors").read_bytes())
    if path.exists():
        start = len(raw) // 2
    else:
        path = tag_dir / "model.safetensors"
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_len])
        span = {k: v["data_offsets"] for k, v in header.items() if k.startswith("teacher.")}
        name = max(span, key=lambda k: span[k][1] - span[k][0])
        assert span[name][1] - span[name][0] >= 4096
        start = 8 + header_len + span[name][0]
    raw[start : start + 4096] = bytes(4096)
    size = path.stat().st_size
    path.write_bytes(bytes(raw))
    assert path.stat().st_size == size
    return path


@pytest.mark.slow
def test_same_size_corruption_is_detected_and_auto_falls_back(run_dir, tmp_path, capsys):
    from unimodal_free.store.checkpoints import resolve_resume
    from unimodal_free.store.weights import load_weights

    run = copy_run(run_dir, tmp_path / "run")
    newest = run / "checkpoints" / "step00000002"
    teacher = zero_teacher_block(newest)
    capsys.readouterr()
    assert resolve_resume("auto", run) == run / "checkpoints" / "step00000001"
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"falling back to {run / 'checkpoints' / 'step00000001'}, the newest intact"), line
    assert f"broken: {teacher}: sha256 differs" in line, line
    with pytest.raises(Exception, match=f"{teacher}: sha256 differs"):
        load_weights(newest)  # eval reads the same file: refused too


@pytest.mark.slow
def test_broken_only_checkpoint_is_an_error_not_a_fresh_start(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step00000001")
    only = run / "checkpoints" / "step00000002"
    teacher = zero_teacher_block(only)
    before = {p.name: p.read_bytes() for p in only.iterdir()}
    proc = launch(resume_cmd(run))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line(proc.stderr)
    assert f"{teacher}: sha256 differs" in line and "no intact checkpoint" in line, line
    assert {p.name: p.read_bytes() for p in only.iterdir()} == before  # nothing overwritten
    assert [p.name for p in tags(run)] == ["step00000002"]


class _ByName:
    """Pickles as ``getattr(cls, name)``: how Debian 12's Python 3.11.2 pickles an enum member."""

    def __init__(self, cls, name):
        self.cls, self.name = cls, name

    def __reduce__(self):
        return (getattr, (self.cls, self.name))


def test_an_enum_pickled_by_name_loads_and_getattr_reaches_nothing_else(tmp_path):
    """A ZeRO optimizer file written under Debian's Python names ``builtins.getattr``; the weights-only
    loader reads its enum member, and refuses every other use of getattr (the route to any attribute)."""
    import pickle

    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    from unimodal_free.store.safe_load import load_weights_only, unsafe_globals

    honest = tmp_path / "debian_optim_states.pt"
    torch.save({"zero_stage": _ByName(ZeroStageEnum, "gradients"), "w": torch.ones(2)}, honest)
    assert unsafe_globals(honest) == []
    loaded = load_weights_only(honest)
    assert loaded["zero_stage"] is ZeroStageEnum.gradients and torch.equal(loaded["w"], torch.ones(2))

    for cls, name in [(LossScaler, "__init__"), (ZeroStageEnum, "__class__"), (ZeroStageEnum, "nosuch")]:
        hostile = tmp_path / f"{name}.pt"
        torch.save({"x": _ByName(cls, name)}, hostile)
        with pytest.raises(pickle.UnpicklingError, match="not a member of an allow-listed enum"):
            load_weights_only(hostile)
