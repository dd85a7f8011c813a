"""Typed config: defaults, JSON overrides, dotted --set, one-line errors naming the path."""

import json

import pytest

from unimodal_free.config import Config, ConfigError, config_from_dict, load_config, save_config


def test_defaults_and_json_override(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"d_model": 128, "num_heads": 4}, "train": {"max_steps": 7}}))
    cfg = load_config(path)
    assert cfg.model.d_model == 128
    assert cfg.train.max_steps == 7
    assert cfg.model.num_latents == Config().model.num_latents  # untouched default


def test_dotted_overrides_parse_json_values():
    cfg = config_from_dict({}, ["model.num_latents=16", "train.output_dir=runs/x", "objective.align_weight=0"])
    assert cfg.model.num_latents == 16
    assert cfg.train.output_dir == "runs/x"
    assert cfg.objective.align_weight == 0.0 and isinstance(cfg.objective.align_weight, float)


def test_sources_accept_string_list_and_weights():
    cfg = config_from_dict(
        {"data": {"train": ["a/*.tar", {"path": "b/{0..3}.tar", "weight": 3}], "heldout": "h/"}}
    )
    assert [s.path for s in cfg.data.train] == ["a/*.tar", "b/{0..3}.tar"]
    assert cfg.data.train[1].weight == 3.0
    assert cfg.data.heldout[0].path == "h/"
    cfg = config_from_dict({}, ['data.train=[{"path": "x", "weight": 2}]'])
    assert cfg.data.train[0].weight == 2.0


@pytest.mark.parametrize(
    "data, overrides, needle",
    [
        ({"model": {"d_modle": 3}}, [], "model.d_modle: unknown key"),
        ({"model": {"d_model": "big"}}, [], "model.d_model: expected int"),
        ({"train": {"max_steps": True}}, [], "train.max_steps: expected int"),
        ({}, ["deepspeed.zero_stage=5"], "deepspeed.zero_stage: 5 is not one of"),
        ({}, ["objective.target_space=pixels"], "objective.target_space"),
        ({}, ["model.d_model=100", "model.num_heads=3"], "model.d_model"),
        ({"data": {"train": [{"path": "x", "weight": "heavy"}]}}, [], "data.train[0].weight"),
        ({}, ["masking.image_ratio=1.5"], "masking.image_ratio"),
        ({}, ["nosuch.key=1"], "nosuch: unknown key"),
        ({}, ['objective.modality_weights={"video": 1}'], "objective.modality_weights.video: unknown modality"),
        ({}, ['objective.modality_weights={"speech": -1}'], "objective.modality_weights.speech: must be a number >= 0"),
        ({}, ['objective.modality_weights={"speech": "x"}'], "objective.modality_weights.speech: must be a number"),
    ],
)
def test_bad_values_name_the_dotted_path(data, overrides, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_bad_file_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(ConfigError, match="broken.json: invalid JSON"):
        load_config(path)
    with pytest.raises(ConfigError, match="missing.json: config file not found"):
        load_config(tmp_path / "missing.json")


def test_resolved_config_round_trips(tmp_path):
    cfg = config_from_dict({}, ["model.d_model=64", "model.num_heads=2", 'data.train=["s/"]'])
    save_config(cfg, tmp_path / "config.json")
    again = load_config(tmp_path / "config.json")
    assert again == cfg


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.json")):
        load_config(path)
