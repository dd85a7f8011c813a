"""Checkpoint bookkeeping on real files: completeness markers, the latest pointer, pruning,
resume-target resolution and the refusals that happen before any process group starts."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import torch

from helpers import tiny_data
from unimodal_free.store.checkpoints import (COMPLETE, TRAINER_STATE, CheckpointError, is_complete, mark_complete,
                                             point_latest, resolve_resume, tag_for)
from unimodal_free.train.checkpoint_manager import CheckpointManager
from unimodal_free.train.rng import capture_rng, restore_rng
from unimodal_free.train.state import TrainerState


def write_tag(run_dir, step, complete=True, tokenizer=None, world_size=1):
    """A checkpoint dir laid out as CheckpointManager.save leaves it (engine file stands in as bytes)."""
    tag_dir = run_dir / "checkpoints" / tag_for(step)
    tag_dir.mkdir(parents=True)
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"x" * (100 + step))
    state = TrainerState(step=step, micro_batches=step, world_size=world_size, tokenizer=tokenizer or {"kind": "bytes"})
    (tag_dir / TRAINER_STATE).write_text(json.dumps(state.__dict__))
    if complete:
        mark_complete(tag_dir, step)
    return tag_dir


def test_complete_marker_lists_files_and_sizes(tmp_path):
    tag_dir = write_tag(tmp_path, 2)
    assert is_complete(tag_dir)
    listing = json.loads((tag_dir / COMPLETE).read_text())
    assert listing["step"] == 2 and set(listing["files"]) == {"mp_rank_00_model_states.pt", TRAINER_STATE}
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"x")  # truncated after the marker: not trusted
    assert not is_complete(tag_dir)
    (tag_dir / "mp_rank_00_model_states.pt").unlink()
    assert not is_complete(tag_dir)
    assert not is_complete(write_tag(tmp_path, 4, complete=False))
    (tmp_path / "checkpoints" / tag_for(4) / COMPLETE).write_text("{not json")
    assert not is_complete(tmp_path / "checkpoints" / tag_for(4))


def test_latest_pointer_and_fallback(tmp_path):
    mgr = CheckpointManager(tmp_path)
    assert mgr.latest_tag() is None
    write_tag(tmp_path, 2)
    write_tag(tmp_path, 4)
    write_tag(tmp_path, 6, complete=False)  # a crash inside the step-6 save
    point_latest(mgr.root, tag_for(4))
    assert mgr.latest_tag() == tag_for(4)
    point_latest(mgr.root, tag_for(6))  # pointer to an incomplete dir (cannot happen via save) is not trusted
    assert mgr.latest_tag() == tag_for(4)
    (mgr.root / "latest").write_text("garbage\n")
    assert mgr.latest_tag() == tag_for(4)
    assert not list(mgr.root.glob(".latest.tmp*"))  # the atomic write leaves no temp files


def test_prune_keeps_last_n_and_latest(tmp_path):
    for step in (2, 4, 6, 8):
        write_tag(tmp_path, step)
    write_tag(tmp_path, 3, complete=False)  # stale partial, older than latest
    write_tag(tmp_path, 10, complete=False)  # newer partial: may be in progress, left alone
    mgr = CheckpointManager(tmp_path, keep_last=2)
    point_latest(mgr.root, tag_for(4))  # e.g. latest moved back by a resume
    mgr.prune()
    left = sorted(p.name for p in mgr.root.iterdir() if p.is_dir())
    assert left == [tag_for(4), tag_for(6), tag_for(8), tag_for(10)]
    mgr.remove_incomplete_after(8)
    assert not (mgr.root / tag_for(10)).exists()


def test_resolve_resume(tmp_path):
    run_dir = tmp_path / "run"
    assert resolve_resume("", run_dir) is None
    assert resolve_resume("auto", run_dir) is None  # nothing yet: fresh start
    write_tag(run_dir, 2)
    write_tag(run_dir, 4, complete=False)
    with pytest.raises(CheckpointError, match="already holds checkpoint step00000002; set train.resume=auto"):
        resolve_resume("", run_dir)
    want = run_dir / "checkpoints" / tag_for(2)
    assert resolve_resume("auto", run_dir) == want
    assert resolve_resume(str(run_dir), tmp_path / "other") == want
    assert resolve_resume(str(run_dir / "checkpoints"), tmp_path / "other") == want
    assert resolve_resume(str(want), tmp_path / "other") == want
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        resolve_resume(str(run_dir / "checkpoints" / tag_for(4)), run_dir)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_resume(str(tmp_path / "nope"), run_dir)
    with pytest.raises(CheckpointError, match="holds no complete checkpoint"):
        resolve_resume(str(tmp_path), run_dir)


def test_rng_state_round_trips_through_weights_only_load():
    gen = torch.Generator().manual_seed(3)
    buf = io.BytesIO()
    torch.save(capture_rng(gen), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    first = (torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=gen))
    restore_rng(state, gen)
    again = (torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and torch.equal(first[3], again[3])


def _demo_sets(tmp_path):

    data = tiny_data(tmp_path.parent / "ckpt_demo")
    return [
        "--config", "configs/tiny.json",
        "--set", f"data.train={data / 'train'}", "--set", f"data.heldout={data / 'heldout'}",
        "--set", f"data.tokenizer={data / 'tokenizer.model'}", "--set", f"train.output_dir={tmp_path / 'run'}",
        "--set", "train.resume=auto",
    ]


def test_resume_with_another_tokenizer_is_refused_before_start(tmp_path, capsys, monkeypatch):
    import torch.distributed as dist

    from unimodal_free.train import main

    monkeypatch.chdir(__import__("test_train_launch").ROOT)
    write_tag(tmp_path / "run", 2, tokenizer={"kind": "bytes", "path": None, "sha256": None})
    sets = _demo_sets(tmp_path)
    capsys.readouterr()  # (demo data generation talks)
    assert main(sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer mismatch: expected bytes, got sentencepiece" in err[0], err
    assert not dist.is_initialized()


def test_resume_with_another_world_size_is_refused_before_start_where_it_must(tmp_path, capsys, monkeypatch):
    """Another number of ranks resumes (test_resume_world.py) except bf16 without ZeRO (its optimizer state is
    per rank, untested across rank counts): refused in one line, before any process group."""
    import torch.distributed as dist

    from unimodal_free.data.reading.tokenizer import load_tokenizer
    from unimodal_free.train import main

    monkeypatch.chdir(__import__("test_train_launch").ROOT)
    sets = _demo_sets(tmp_path) + ["--set", "train.precision=bf16", "--set", "deepspeed.zero_stage=0"]
    tok = load_tokenizer(sets[sets.index("--set") + 5].split("=", 1)[1])
    write_tag(tmp_path / "run", 2, tokenizer=tok.reference, world_size=2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    capsys.readouterr()
    assert main(sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written by 2 ranks, this run has 1" in err[0], err
    assert "bf16 without ZeRO" in err[0] and "resume with 2 ranks" in err[0], err
    assert not dist.is_initialized()


def test_verify_catches_same_size_changes_and_names_the_file(tmp_path):
    from unimodal_free.store.checkpoints import file_sha256, verify

    tag_dir = write_tag(tmp_path, 2)
    listing = json.loads((tag_dir / COMPLETE).read_text())["files"]
    model = tag_dir / "mp_rank_00_model_states.pt"
    assert listing[model.name] == {"size": model.stat().st_size, "sha256": file_sha256(model)}
    verify(tag_dir)
    model.write_bytes(b"y" * model.stat().st_size)  # same size: the size check alone trusts it
    assert is_complete(tag_dir)
    with pytest.raises(CheckpointError, match=f"{model}: sha256 differs"):
        verify(tag_dir)
    verify(tag_dir, only=[TRAINER_STATE])  # eval checks the file it reads


def test_only_a_signed_or_trusted_checkpoint_is_unpickled_beyond_the_allow_list(tmp_path, monkeypatch):
    import datetime
    import os
    import pickle

    from unimodal_free.store.checkpoints import files_to_unpickle
    from unimodal_free.store.safe_load import weights_only_engine
    from unimodal_free.store.signing import KEY_ENV, key_path

    tag_dir = write_tag(tmp_path, 2, complete=False)
    model = tag_dir / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "when": datetime.timedelta(days=1)}, model)  # a global not allowed
    mark_complete(tag_dir, 2)  # signed with this user's key (the suite's), created on first use
    ours = key_path()
    assert os.stat(ours).st_mode & 0o777 == 0o600
    assert files_to_unpickle(tag_dir, trust=False) == [model]

    class Engine:  # what weights_only_engine touches of a DeepSpeed engine
        checkpoint_engine = "original"
    engine = Engine()
    with weights_only_engine(engine, [model]):
        assert engine.checkpoint_engine.load(str(model))["when"] == datetime.timedelta(days=1)
    with weights_only_engine(engine):
        with pytest.raises(pickle.UnpicklingError, match=f"{model}: refused by the weights-only loader"):
            engine.checkpoint_engine.load(str(model))
    assert engine.checkpoint_engine == "original"

    monkeypatch.setenv(KEY_ENV, str(tmp_path / "someone_else.key"))  # a downloaded checkpoint
    with pytest.raises(CheckpointError, match=f"{model}: loading it would call datetime.timedelta .* not signed"):
        files_to_unpickle(tag_dir, trust=False)
    with pytest.raises(CheckpointError, match="not signed with your key"):
        resolve_resume("auto", tmp_path)
    assert files_to_unpickle(tag_dir, trust=True) == [model]  # --trust-checkpoint
    assert resolve_resume("auto", tmp_path, trust=True) == tag_dir

    monkeypatch.setenv(KEY_ENV, str(ours))  # our key again, but the manifest was edited after signing
    assert files_to_unpickle(tag_dir, trust=False) == [model]
    manifest = json.loads((tag_dir / COMPLETE).read_text())
    manifest["step"] = 3
    (tag_dir / COMPLETE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not signed with your key"):
        files_to_unpickle(tag_dir, trust=False)
