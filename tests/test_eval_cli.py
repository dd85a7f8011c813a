"""``python -m unimodal_free.eval`` end to end on a tiny exported model and writer-made shards."""

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime

import pytest
import torch

from helpers import NUM_COCO, NUM_TRIPLES, ROOT, error_line
from unimodal_free.config import Source, config_to_dict
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.reading import tokenizer as tokenizer_cli
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.data.writing import shards as shard_cli
from unimodal_free.eval import evaluate
from unimodal_free.eval.cli import main
from unimodal_free.store.export import save_export
from unimodal_free.store.rebuild import load_model
from unimodal_free.store.weights import load_weights


DIRECTIONS = {f"{a}_to_{b}" for a in ("image", "speech", "text") for b in ("image", "speech", "text") if a != b}
# open_clip's get_clip_metrics names (recalls as fractions, ranks 1-based), then what reading them needs.
METRIC_KEYS = {"R@1", "R@5", "R@10", "mean_rank", "median_rank", "num_queries", "num_candidates",
               "chance_R@1", "chance_R@5", "chance_R@10", "too_small"}


def training_projector(logdir, setup) -> str:
    """What the trainer leaves in ``run_dir/tb`` at its last eval (its own ``evaluate`` call with the run's
    writer): events and a projector config, returned as the config's text."""
    from torch.utils.tensorboard import SummaryWriter

    weights, tok = load_weights(setup["export"]), load_tokenizer(str(setup["tok"]))
    writer = SummaryWriter(logdir)
    cfg = weights.cfg
    evaluate(load_model(weights, "teacher", tok.vocab_size, "x"), make_eval_loader(cfg.data, [Source(path=setup["shards"][0])], tok, cfg.train.micro_batch_size),
             cfg.eval, cfg.data, tok, "cpu", max_samples=4, writer=writer, step=7)
    writer.close()
    return (logdir / "projector_config.pbtxt").read_text()


@pytest.mark.slow
def test_cli_end_to_end(setup, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out_json, logdir = tmp_path / "res" / "retrieval.json", tmp_path / "tb"
    cb_json = tmp_path / "res" / "clip_benchmark.json"
    trained = training_projector(logdir, setup)
    rc = main(["--checkpoint", str(setup["export"]), "--data", *setup["shards"], "--json", str(out_json),
               "--clip-benchmark-json", str(cb_json), "--logdir", str(logdir), "--batch-size", "3",
               "--min-queries", "7"])
    stdout = capsys.readouterr().out
    assert rc == 0
    res = json.loads(out_json.read_text())
    # One flat file: "{direction}_{key}" for every direction present, and the metadata.
    assert set(res) == {f"{d}_{k}" for d in DIRECTIONS for k in METRIC_KEYS} | {"metadata"}
    for d in DIRECTIONS:
        for k in (1, 5, 10):
            assert 0.0 <= res[f"{d}_R@{k}"] <= 1.0 and 0.0 < res[f"{d}_chance_R@{k}"] <= 1.0
        assert 1.0 <= res[f"{d}_median_rank"] <= res[f"{d}_num_candidates"]
        assert 1.0 <= res[f"{d}_mean_rank"] <= res[f"{d}_num_candidates"]
    assert res["text_to_image_num_queries"] == NUM_TRIPLES + 3 * NUM_COCO
    assert res["speech_to_text_num_candidates"] == NUM_TRIPLES
    # Speech directions have NUM_TRIPLES = 6 queries, under --min-queries 7; the image/text ones 10 and 18.
    assert {d for d in DIRECTIONS if res[f"{d}_too_small"]} == {d for d in DIRECTIONS if "speech" in d}
    assert not list(tmp_path.glob("res/*.meta.json"))  # no second file
    meta = res["metadata"]
    assert meta["step"] == 7 and meta["model"] == "teacher" and meta["pooling"] == "mean"
    assert meta["samples"] == NUM_TRIPLES + NUM_COCO and meta["min_queries"] == 7
    assert meta["data"] == setup["shards"] and meta["checkpoint"] == str(setup["export"])
    assert meta["tokenizer"]["sha256"] == load_tokenizer(str(setup["tok"])).reference["sha256"]
    assert meta["version"] == importlib.metadata.version("unimodal_free")
    # The package runs from this git checkout: its commit is recorded.
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.returncode == 0 and meta["git_commit"] == head.stdout.strip()
    assert isinstance(meta["git_dirty"], bool)
    assert datetime.fromisoformat(meta["date"]).tzinfo is not None

    # CLIP_benchmark's result file: its six fields; image_retrieval = text queries ranking images.
    cb = json.loads(cb_json.read_text())
    assert set(cb) == {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert cb["task"] == "zeroshot_retrieval" and cb["language"] == "en" and cb["model"] == "unimodal_free-teacher"
    assert cb["dataset"] == ",".join(setup["shards"]) and cb["pretrained"] == str(setup["export"])
    assert cb["metrics"] == {**{f"image_retrieval_recall@{k}": res[f"text_to_image_R@{k}"] for k in (1, 5, 10)},
                             **{f"text_retrieval_recall@{k}": res[f"image_to_text_R@{k}"] for k in (1, 5, 10)}}

    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("direction"))
    table = lines[header : header + 2 + len(DIRECTIONS)]
    assert len({len(line) for line in table}) == 1  # aligned
    assert re.split(r"\s{2,}", table[0].strip())[3:8] == ["R@1 % (chance %)", "R@5 % (chance %)",
                                                         "R@10 % (chance %)", "medR", "meanR"]
    assert {line.split()[0] for line in table[2:]} == DIRECTIONS
    assert table[0].split()[-1] == "note"
    assert {line.split()[0] for line in table[2:] if line.endswith("too small to read (< 7 queries)")} == {
        d for d in DIRECTIONS if "speech" in d}
    row = next(line for line in table[2:] if line.startswith("image_to_text"))
    assert row.split()[3] == f"{100 * res['image_to_text_R@1']:.1f}"  # the table in percent, the JSON in fractions

    # The eval wrote into a sub-folder of its own; the training run's projector config is untouched.
    evaldir = logdir / "eval-step00000007-teacher"
    assert f"TensorBoard events: {evaldir}" in stdout
    assert (logdir / "projector_config.pbtxt").read_text() == trained
    acc = EventAccumulator(str(evaldir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert {"eval/similarity/image_speech", "eval/similarity/image_text", "eval/similarity/speech_text"} <= set(
        acc.Tags()["images"]
    )
    assert acc.Scalars("eval/image_to_text_R@1")[0].value == pytest.approx(res["image_to_text_R@1"])
    assert acc.Scalars("eval/image_to_text_R@1")[0].step == 7
    assert "sprite.png" in (evaldir / "projector_config.pbtxt").read_text()
    tsv = next(evaldir.glob("00007/*/metadata.tsv")).read_text().splitlines()
    assert tsv[0] == "modality\tpair\tcaption\tkey" and {row.split("\t")[0] for row in tsv[1:]} == {"image", "speech", "text"}
    # Image and speech points carry their pair's caption, as written into the shards.
    assert "t0\ta red thing number 0\t" in "\n".join(tsv)
    training = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    training.Reload()
    assert not [t for t in training.Tags()["scalars"] if t.startswith("eval/")]  # no eval curve mixed in


@pytest.mark.slow
def test_module_entry_point_max_samples(setup, tmp_path):
    out_json = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "unimodal_free.eval", "--checkpoint", str(setup["export"]), "--data",
         setup["shards"][0], "--model", "student", "--max-samples", "4", "--json", str(out_json)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "image_to_speech" in proc.stdout
    res = json.loads(out_json.read_text())
    assert res["image_to_text_num_queries"] == 4 and res["image_to_text_chance_R@1"] == pytest.approx(0.25)


def test_loads_the_requested_weights(setup):
    weights = load_weights(setup["export"])
    for which in ("teacher", "student"):
        model = load_model(weights, which, load_tokenizer(str(setup["tok"])).vocab_size, "x")
        for name, t in model.state_dict().items():
            assert torch.equal(t, getattr(weights, which)[name]), (which, name)
    assert any(not torch.equal(weights.teacher[k], weights.student[k]) for k in weights.student)


def test_refuses_a_different_tokenizer(setup, tmp_path, capsys):
    other = tmp_path / "other"
    coco_dir = str(setup["root"] / "coco")
    assert tokenizer_cli.main(["train", "--input", coco_dir, "--vocab-size", "30", "--output", str(other)]) == 0
    capsys.readouterr()
    assert main(["--checkpoint", str(setup["export"]), "--data", setup["shards"][0], "--tokenizer", f"{other}.model"]) == 2
    err = error_line(capsys)
    assert "tokenizer mismatch" in err and str(setup["tok"]) in err and f"{other}.model" in err
    assert main(["--checkpoint", str(setup["export"]), "--data", setup["shards"][0], "--tokenizer", "bytes"]) == 2
    assert "tokenizer mismatch" in error_line(capsys)


def test_missing_recorded_tokenizer_names_it(setup, tmp_path, capsys):
    # A copy of the export whose recorded tokenizer path does not exist.
    weights = load_weights(setup["export"])
    gone = dict(weights.tokenizer_ref, path=str(tmp_path / "moved" / "tok.model"))
    export = save_export(tmp_path / "m.safetensors", weights.student, weights.teacher, config_to_dict(weights.cfg), gone, 1)
    assert main(["--checkpoint", str(export), "--data", setup["shards"][0]]) == 2
    err = error_line(capsys)
    assert gone["path"] in err and "--tokenizer" in err and str(export) in err
    # Pointing at a copy with the same bytes works.
    shutil.copy(setup["tok"], tmp_path / "copy.model")
    assert main(["--checkpoint", str(export), "--data", setup["shards"][0], "--tokenizer",
                 str(tmp_path / "copy.model"), "--max-samples", "3"]) == 0


def test_bad_inputs_fail_in_one_line(setup, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nope"), "--data", setup["shards"][0]]) == 2
    assert "nope" in error_line(capsys)
    assert main(["--checkpoint", str(setup["export"]), "--data", str(tmp_path / "missing-shards")]) == 2
    assert "missing-shards" in error_line(capsys)
    text_only = tmp_path / "text.txt"
    text_only.write_text("just words\nmore words\n")
    assert shard_cli.main(["text", str(text_only), str(tmp_path / "text_shards")]) == 0
    capsys.readouterr()
    assert main(["--checkpoint", str(setup["export"]), "--data", str(tmp_path / "text_shards")]) == 2
    assert "nothing to retrieve" in error_line(capsys)


@pytest.mark.parametrize("make", ["text", "pickle", "truncated", "device", "missing"])
def test_checkpoint_that_is_no_safetensors_export_is_one_line(setup, tmp_path, capsys, make):
    """Only the header is read to refuse it: no traceback, and a pickle is never unpickled."""
    path = {"device": "/dev/zero", "missing": str(tmp_path / "gone.safetensors")}.get(make, str(tmp_path / make))
    if make == "text":
        (tmp_path / make).write_text("not a model\n")
    elif make == "pickle":
        torch.save({"weights": torch.zeros(3)}, tmp_path / make)
    elif make == "truncated":
        (tmp_path / make).write_bytes(setup["export"].read_bytes()[:1000])
    assert main(["--checkpoint", path, "--data", setup["shards"][0]]) == 2
    err = error_line(capsys)
    assert err.startswith(f"error: --checkpoint {path}: "), err


def test_unknown_device_is_a_usage_error(setup, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--checkpoint", str(setup["export"]), "--data", setup["shards"][0], "--device", "gpu0"])
    assert info.value.code == 2 and "--device" in capsys.readouterr().err.strip().splitlines()[-1]
