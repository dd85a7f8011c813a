"""The recipe configs (``configs/recipes/*.json``): each loads and passes config validation and the size budget,
is the GPU base template with its own data mix, and ships in the wheel."""

import glob
import json
import tomllib
from pathlib import Path

import pytest

from unimodal_free.config import CONFIG_DIR, check_budget, config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((CONFIG_DIR / "recipes").glob("*.json"))
BASE = config_to_dict(load_config(CONFIG_DIR / "joint-base.json"))


def test_the_recipes_are_there():
    assert {p.stem for p in RECIPES} == {"spokencoco-base", "flickr8k-audio-base", "places-audio-base",
                                         "cc12m-base", "librispeech-base"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_and_is_the_base_template_with_its_data(path):
    cfg = load_config(path)  # unknown keys, types and every key's rule: one error line naming the key
    check_budget(cfg, 8000)  # a vocabulary of 8000 (docs/DATA.md's tokenizer command)
    got = config_to_dict(cfg)
    for section in ("model", "masking", "objective", "optim", "deepspeed", "eval"):
        assert got[section] == BASE[section], section
    assert got["data"]["train"] and got["data"]["heldout"]  # the held-out set is named, never the demo's
    assert all(s["path"].startswith("shards/") for s in got["data"]["train"] + got["data"]["heldout"])
    assert got["data"]["tokenizer"] == "shards/spm.model" and got["train"]["output_dir"] == f"runs/{path.stem}"
    assert {k: v for k, v in got["data"].items() if k not in ("train", "heldout", "tokenizer")} == \
        {k: v for k, v in BASE["data"].items() if k not in ("train", "heldout", "tokenizer")}


def test_spokencoco_recipe_mixes_three_sources():
    data = json.loads((CONFIG_DIR / "recipes" / "spokencoco-base.json").read_text())["data"]
    assert [(s["path"], s["weight"]) for s in data["train"]] == [
        ("shards/spokencoco/train", 2.0), ("shards/coco/train", 1.0), ("shards/librispeech/train", 1.0)]
    assert data["heldout"] == [{"path": "shards/spokencoco/heldout"}]


def test_the_wheel_ships_the_recipes():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["unimodal_free"]
    shipped = {f for g in globs for f in glob.glob(g, root_dir=CONFIG_DIR.parent)}  # setuptools' glob: no '/' in '*'
    for path in RECIPES:
        assert str(path.relative_to(CONFIG_DIR.parent)) in shipped, path
