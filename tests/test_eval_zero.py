"""Eval reads any ZeRO stage: a run directory (DeepSpeed checkpoint, ZeRO-3 partitions
consolidated) and the run's export give the same weights and the same embeddings."""

import shutil
import subprocess

import pytest
import torch

from helpers import ROOT, free_port, leftover_shm, write_raw_corpus
from unimodal_free.batch import modality_specs
from unimodal_free.config import Source
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.data.writing import shards as shard_cli
from unimodal_free.eval import evaluate
from unimodal_free.model import build_model
from unimodal_free.store.export import EXPORT_NAME
from unimodal_free.store.weights import load_weights


def train_tiny(run_dir, shards, stage: int) -> None:
    """Two optimizer steps on 2 CPU ranks with DeepSpeed's own launcher; checkpoint at the end."""
    cmd = [
        shutil.which("deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), "launch/train.py",
        "--config", "configs/tiny.json",
        "--set", f"deepspeed.zero_stage={stage}", "--set", "train.max_steps=2", "--set", "train.checkpoint_every=2",
        "--set", "train.micro_batch_size=4", "--set", "eval.every=0", "--set", f"train.output_dir={run_dir}",
        "--set", f"data.train={shards}", "--set", f"data.heldout={shards}", "--set", "data.tokenizer=bytes",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert not leftover_shm(cmd), leftover_shm(cmd)


def embeddings(weights, which, shards):
    tok = load_tokenizer("bytes")
    model = build_model(weights.cfg.model, weights.cfg.objective, modality_specs(weights.cfg.data, tok.vocab_size))
    model.load_state_dict(getattr(weights, which))
    cfg = weights.cfg
    out = evaluate(model, make_eval_loader(cfg.data, [Source(path=str(shards))], tok, 4), cfg.eval, cfg.data,
                   tok, "cpu", None, which)
    return out.embeddings


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("deepspeed") is None, reason="the deepspeed launcher is not on PATH")
@pytest.mark.parametrize("stage", [2, 3])
def test_run_dir_and_export_agree(stage, tmp_path):
    manifest, _ = write_raw_corpus(tmp_path / "raw")
    shards = tmp_path / "shards"
    assert shard_cli.main(["manifest", str(manifest), str(shards), "--maxcount", "3"]) == 0
    run_dir = tmp_path / f"zero{stage}"
    train_tiny(run_dir, shards, stage)

    from_run = load_weights(run_dir)  # latest good DeepSpeed checkpoint
    from_export = load_weights(run_dir / EXPORT_NAME)
    assert from_run.source.endswith("step00000002") and from_run.step == from_export.step == 2
    assert from_run.cfg.deepspeed.zero_stage == stage
    for which in ("teacher", "student"):
        a, b = getattr(from_run, which), getattr(from_export, which)
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (which, name)
        ea, eb = embeddings(from_run, which, shards), embeddings(from_export, which, shards)
        assert set(ea.modalities) == {"image", "speech", "text"}
        for m in ea.modalities:
            assert torch.equal(ea.embeddings[m], eb.embeddings[m]), (which, m)
    # Training moved the student away from its EMA teacher: the two are really different weights.
    assert any(not torch.equal(from_run.student[k], from_run.teacher[k]) for k in from_run.student)
