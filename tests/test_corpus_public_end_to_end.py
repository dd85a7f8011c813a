"""Every public corpus end to end: its tiny copy in the published layout -> the converter -> shards ->
a sentencepiece tokenizer trained on them -> ONE 20-step training on 2 ranks reading all five
corpora's train shards as five sources -> the eval CLI on each corpus's held-out shards, whose
queries must be exactly the fixture's held-out pictures, captions and recordings (one run for all
corpora keeps the suite's time down)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import public_corpora as fx
from helpers import DEEPSPEED, ROOT, free_port, needs_launcher, run, scalars, tail, warm_up_deepspeed
from unimodal_free.data.corpora.__main__ import main as convert

STEPS = 20


@pytest.mark.slow
@needs_launcher
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the fixtures")
def test_every_corpus_from_published_layout_to_eval(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "shards"
    written = {
        "spokencoco": fx.spokencoco(raw / "SpokenCOCO", raw / "coco2014"),
        "flickr8k-audio": fx.flickr8k_audio(raw / "flickr8k"),
        "places-audio": fx.places_audio(raw / "places", raw / "places205"),
        "coco-captions": fx.coco_captions(raw / "coco"),
        "flickr30k": fx.flickr30k(raw / "flickr30k"),
    }
    args = {
        "spokencoco": [raw / "SpokenCOCO", "--images", raw / "coco2014"],
        "flickr8k-audio": [raw / "flickr8k"],
        "places-audio": [raw / "places", "--images", raw / "places205"],
        "coco-captions": [raw / "coco"],
        "flickr30k": [raw / "flickr30k", "--karpathy", raw / "flickr30k" / "dataset_flickr30k.json"],
    }
    for name, extra in args.items():
        assert convert([name, str(extra[0]), str(out / name), *map(str, extra[1:])]) == 0, name
    tok = subprocess.run([sys.executable, "-m", "unimodal_free.data.reading.tokenizer", "train", "--input",
                          str(out / "*" / "train" / "*.tar"), "--vocab-size", "200", "--output", str(out / "spm")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tok.returncode == 0, tok.stderr

    warm_up_deepspeed()
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    train = json.dumps([{"path": str(out / name / "train"), "weight": 1.0} for name in written])
    sets = [f"train.max_steps={STEPS}", "train.log_every=1", "train.checkpoint_every=10", "train.micro_batch_size=8",
            "eval.every=10", "eval.max_time_share=1.0", f"train.output_dir={run_dir}", f"data.train={train}",
            f"data.heldout={out / 'spokencoco' / 'heldout'}", f"data.tokenizer={out / 'spm.model'}"]
    cmd = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(free_port()), "launch/train.py",
           "--config", "configs/tiny.json"] + [a for s in sets for a in ("--set", s)]
    assert run(cmd, log) == 0, tail(log)
    assert [s for s, _ in scalars(run_dir, "train/loss")] == list(range(1, STEPS + 1))
    assert [s for s, _ in scalars(run_dir, "val/image_to_speech_R@1")] == [10, 20]

    for name, w in written.items():
        result = tmp_path / f"{name}.json"
        ev = subprocess.run([sys.executable, "-m", "unimodal_free.eval", "--checkpoint", str(run_dir),
                             "--data", str(out / name / "heldout"), "--json", str(result), "--min-queries", "1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert ev.returncode == 0, ev.stderr[-3000:]
        flat = json.loads(result.read_text())
        pictures, captions, recordings = w.pictures["heldout"], w.captions["heldout"], w.recordings["heldout"]
        assert flat[f"image_to_{'text' if captions else 'speech'}_num_queries"] == pictures, name
        if captions:
            assert flat["text_to_image_num_queries"] == captions, name
        if recordings:
            assert flat["speech_to_image_num_queries"] == recordings, name
