"""The front_end experiment: supervised training of the image path, per arm, on labelled pictures.

Real shards (helpers.write_labelled_shards: 2 colours x 3 shapes), the tiny config, real models from
``build_model``; a few steps only, so the accuracies are checked for shape and range, not for learning.
"""

import json
from pathlib import Path

import pytest
import torch

from helpers import tiny_cfg, tiny_model, write_labelled_shards
from unimodal_free.batch import Rows
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.experiments.__main__ import Context, parse_args
from unimodal_free.experiments.front_end import ImageClassifier, accuracy, run

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.json")


def test_accuracy_counts_rows_whose_top_logit_is_the_target():
    logits = torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 3.0, 2.0]])  # (4, 3)
    assert accuracy(logits, torch.tensor([1, 0, 0, 2])) == 0.5
    assert accuracy(logits, torch.tensor([1, 0, 2, 1])) == 1.0


def test_bag_logits_ignore_padding_content_and_length(one_torch_thread):
    cfg = tiny_cfg()
    net = ImageClassifier(tiny_model(cfg, load_tokenizer("bytes")), cfg.model.d_model, 3, pool="elements").eval()
    torch.manual_seed(1)
    width = net.model.embed.adapters["image"].value_dim
    values, coords = torch.rand(2, 6, width), torch.rand(2, 6, 2) * 2 - 1  # (B, M, C), (B, M, 2)
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])  # row 1: 4 real elements
    with torch.no_grad():
        logits = net(Rows(values, coords, padding))  # (2, 3)
        junk = values.clone()
        junk[1, 4:] = torch.nan  # what padding holds must not matter
        coords_junk = coords.clone()
        coords_junk[1, 4:] = 5.0
        assert torch.equal(net(Rows(junk, coords_junk, padding)), logits)
        alone = net(Rows(values[1:, :4], coords[1:, :4], padding[1:, :4]))  # the row unpadded, on its own
    torch.testing.assert_close(alone, logits[1:])
    assert torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("front_end")
    return write_labelled_shards(root / "train", 24, 0), write_labelled_shards(root / "heldout", 12, 1)


def test_two_arms_write_table_and_json(shards, tmp_path, one_torch_thread):
    train, heldout = shards
    lines = []
    ctx = Context(root=tmp_path / "root", config=TINY, ranks=1, log=lines.append,
                  common=(f"data.train={train}", f"data.heldout={heldout}", "data.tokenizer=bytes"),
                  options={"arms": ["perceiver", "bag"], "steps": 3, "eval_every": 2, "batch": 8, "lr": 1e-3})
    table = run(ctx)
    rows = table.splitlines()
    assert rows[0] == "| arm | step 2 train / held-out | step 3 train / held-out | s |"
    assert [r.split(" | ")[0] for r in rows[2:4]] == ["| perceiver", "| bag"]
    assert "on `shape` (3 classes, chance 33.3); 24 training / 12 held-out pictures" in table
    assert "lr 0.001" in table

    out = json.loads((ctx.root / "front_end.json").read_text())
    assert out["classes"] == ["circle", "square", "triangle"]
    assert (out["train_pictures"], out["heldout_pictures"]) == (24, 12)
    assert out["settings"]["label"] == "shape" and out["settings"]["lr"] == 1e-3
    assert list(out["arms"]) == ["perceiver", "bag"]
    assert out["arms"]["bag"]["pool"] == "elements" and out["arms"]["perceiver"]["overrides"] == ["model.element_summary=none"]
    for arm in out["arms"].values():
        assert [p["step"] for p in arm["curve"]] == [2, 3]
        for p in arm["curve"]:
            # 24 and 12 pictures: every accuracy is a whole number of them
            assert 0 <= p["train"] <= 1 and round(p["train"] * 24, 4) % 1 == 0
            assert 0 <= p["heldout"] <= 1 and round(p["heldout"] * 12, 4) % 1 == 0
        assert arm["seconds"] > 0
    assert lines[0] == "front_end: 24 train / 12 held-out pictures, shape: 3 classes"


def test_a_label_no_picture_has_is_one_clear_error(shards, tmp_path):
    from unimodal_free.experiments.runner import ExperimentError

    train, heldout = shards
    ctx = Context(root=tmp_path, config=TINY, ranks=1, log=lambda _: None,
                  common=(f"data.train={train}", f"data.heldout={heldout}", "data.tokenizer=bytes"),
                  options={"label": "texture"})
    with pytest.raises(ExperimentError, match=r"no train picture has a 'texture' label .*--label"):
        run(ctx)


def test_options_reach_their_experiment_only(capsys):
    args = parse_args(["front_end", "--steps", "5", "--label", "colour"], ["front_end", "sharing"])
    assert args.options["steps"] == 5 and args.options["label"] == "colour" and args.options["lr"] is None
    assert parse_args(["sharing"], ["front_end", "sharing"]).options == {}
    with pytest.raises(SystemExit) as info:
        parse_args(["sharing", "--steps", "5"], ["front_end", "sharing"])
    assert info.value.code == 2
    assert "--steps: an option of the front_end experiment, not of sharing" in capsys.readouterr().err
