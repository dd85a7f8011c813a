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
        ({}, ['objective.modality_weights={"video": 1}'], "objective.modality_weights: 'video' is not a modality"),
        ({}, ['objective.modality_weights={"speech": -1}'], "objective.modality_weights: speech: must be >= 0"),
        ({}, ['objective.modality_weights={"speech": "x"}'], "objective.modality_weights: speech: must be a number"),
        ({}, ["objective.collapse_min_rows=1"], "objective.collapse_min_rows: must be >= 2"),
        ({}, ['train.compile="yes"'], "train.compile: expected bool"),
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


# Values that passed the config and failed after start (traceback, exit 1), each with the path the
# one-line error must name; then one per kind of rule (range, finite, choice, shape, relation).
BAD_VALUES = [
    ("model.cross_heads=0", "model.cross_heads: must be > 0"),
    ("model.cross_heads=3", "model.cross_heads: 3 does not divide model.d_model=256"),
    ("data.n_mels=0", "data.n_mels: must be > 0"),
    ("data.frames_per_element=0", "data.frames_per_element: must be > 0"),
    ("data.sample_rate=0", "data.sample_rate: must be >= 100"),
    ("objective.align_dim=0", "objective.align_dim: must be > 0"),
    ("objective.init_temperature=0", "objective.init_temperature: must be > 0"),
    ("masking.speech_span=0", "masking.speech_span: must be > 0"),
    ("optim.lr=NaN", "optim.lr: must be a finite number, got nan"),
    ("optim.betas=[0.9]", "optim.betas: must hold 2 values"),
    ("objective.predictor_blocks=-1", "objective.predictor_blocks: must be >= 0"),
    ("data.max_text_tokens=0", "data.max_text_tokens: must be > 0"),
    ("optim.betas=[0.9, 1.0]", "optim.betas: item 1: must be in [0, 1)"),
    ("optim.eps=Infinity", "optim.eps: must be a finite number"),
    ("model.dropout=1.0", "model.dropout: must be in [0, 1)"),
    ("model.fourier_max_freq=1", "model.fourier_max_freq: must be >= 2"),
    ("model.mlp_ratio=0.001", "model.mlp_ratio: 0.001 x model.d_model=256 leaves an MLP without hidden units"),
    ("data.n_mels=300", "data.n_mels: 300 mel bands exceed the 257 FFT bins"),
    ("data.max_speech_seconds=0.05", "data.max_speech_seconds: 0.05 s holds no speech element"),
    ("data.bucket_boundaries=[64, 32]", "data.bucket_boundaries: must be strictly increasing"),
    ("data.num_workers=-1", "data.num_workers: must be >= 0"),
    ('data.train=[{"path": "a", "weight": 0}]', "data.train[0].weight: must be > 0"),
    ('data.heldout=[""]', "data.heldout[0].path: must not be empty"),
    ("objective.ema_end=0.9", "objective.ema_end: 0.9 is below objective.ema_start=0.999"),
    ("objective.loss=l1", "objective.loss: 'l1' is not one of ['mse', 'smooth_l1']"),
    ("train.seed=-1", "train.seed: must be in [0, 4294967296)"),
    ("train.output_dir=", "train.output_dir: must not be empty"),
    ("eval.max_samples=0", "eval.max_samples: must be > 0"),
    ("deepspeed.ema_gather_numel=0", "deepspeed.ema_gather_numel: must be > 0"),
    ("data.patch_size=12", "data.patch_size: 12 does not divide data.image_size=64"),
    ("data.patch_stride=-1", "data.patch_stride: must be >= 0"),
    ("data.patch_stride=5", "data.patch_stride: 5 does not divide data.image_size=64"),
    ("data.patch_stride=16", "data.patch_stride: 16: needs at most data.patch_size=8"),
    ("data.patch_stride=1", "data.patch_stride: 1: needs at most data.patch_size=8 and an even difference"),
]


@pytest.mark.parametrize("override, needle", BAD_VALUES)
def test_every_bad_value_is_one_line_naming_its_path(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert message.startswith(needle), message
    assert "\n" not in message


@pytest.mark.parametrize("overrides, needle", [
    (["data.patch_size=12", "data.patch_stride=0"], "data.patch_size: 12 does not divide data.image_size=64"),
    (["data.patch_size=12", "data.patch_stride=12"], "data.patch_stride: 12 does not divide data.image_size=64"),
    (["data.patch_size=9", "data.patch_stride=4"], "data.patch_stride: 4: needs at most data.patch_size=9 and an even"),
    (["data.image_size=48", "data.patch_size=8", "data.patch_stride=32"], "data.patch_stride: 32 does not divide"),
])
def test_bad_patch_stride_combinations_are_one_line(overrides, needle):
    """Patch size and stride that only fail together: one line naming the key, before anything cuts a picture."""
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert message.startswith(needle), message
    assert "\n" not in message


def test_overlapping_patches_need_not_divide_the_image():
    """With a stride set, only the stride divides image_size: 12 px windows every 4 px of a 64 px picture."""
    d = load_config(None, ["data.image_size=64", "data.patch_size=12", "data.patch_stride=4"]).data
    assert (d.patch_size, d.patch_stride, d.image_stride) == (12, 4, 4)
    assert load_config(None).data.image_stride == 8  # 0: the patch size


@pytest.mark.parametrize("override, needle", BAD_VALUES)
def test_trainer_main_exits_2_before_start(override, needle, tmp_path, capsys, monkeypatch):
    """The trainer's entry point: exit 2 and the one line, before the Trainer (process group, model) exists."""
    import torch.distributed as dist

    from unimodal_free.train import main, trainer

    def started(*args, **kwargs):
        raise AssertionError(f"{override}: the run started")

    monkeypatch.setattr(trainer, "Trainer", started)
    assert main(["--set", f"train.output_dir={tmp_path / 'run'}", "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith(f"error: {needle}"), err
    assert not dist.is_initialized()


def test_every_option_declares_a_rule():
    """One mechanism for every key (config.option): a field added without a rule fails here."""
    from unimodal_free.config import option
    from unimodal_free.config.validation import iter_options

    with pytest.raises(TypeError, match="needs a rule"):
        option(3)
    cfg = load_config(None, ['data.train=["x"]'])  # a source, so Source's fields are walked too
    missing = [where for where, _, f in iter_options(cfg, "") if "rule" not in f.metadata]
    assert not missing, f"declare these with option(default, rule): {missing}"


def test_keys_fixed_on_resume():
    """Keys the checkpoint's weights or data position depend on; the rest may change."""
    from unimodal_free.config import config_to_dict, fixed_on_resume

    stored = config_to_dict(load_config(None))
    assert fixed_on_resume(stored, load_config(None, ["train.max_steps=9", "optim.lr=1e-3", "model.dropout=0.1",
                                                      "objective.align_weight=0.5", "data.image_size=128"])) == []
    zero1 = config_to_dict(load_config(None, ["deepspeed.zero_stage=1"]))
    assert fixed_on_resume(zero1, load_config(None, ["deepspeed.zero_stage=2"])) == []
    assert fixed_on_resume(zero1, load_config(None, ["deepspeed.zero_stage=3"])) == ["deepspeed.zero_stage: 1 -> 3"]
    changed = fixed_on_resume(stored, load_config(None, ["model.d_model=128", "data.num_workers=2",
                                                         "objective.align_weight=0", "deepspeed.zero_stage=2"]))
    assert changed == ["model.d_model: 256 -> 128", "data.num_workers: 1 -> 2", "objective.align_weight: 1.0 -> 0.0",
                       "deepspeed.zero_stage: 0 -> 2"]
    del stored["model"]["d_model"]  # a checkpoint from before a key existed: nothing to compare with
    assert fixed_on_resume(stored, load_config(None, ["model.d_model=128"])) == []


def test_print_config_prints_the_resolved_config_and_starts_nothing(tmp_path, capsys, monkeypatch):
    """``launch/train.py --config X --set ... --print-config``: the JSON the run would use, exit 0, no run."""
    import torch.distributed as dist

    from unimodal_free.config import CONFIG_DIR, config_to_dict
    from unimodal_free.train import main, trainer

    def started(*args, **kwargs):
        raise AssertionError("--print-config started the run")

    monkeypatch.setattr(trainer, "Trainer", started)
    run_dir = tmp_path / "run"
    sets = ["--set", f"train.output_dir={run_dir}", "--set", "optim.lr=3e-4"]
    assert main(["--config", str(CONFIG_DIR / "tiny.json"), *sets, "--resume", "auto", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = load_config(CONFIG_DIR / "tiny.json", [f"train.output_dir={run_dir}", "optim.lr=3e-4", "train.resume=auto"])
    assert printed == config_to_dict(expected) and printed["optim"]["lr"] == 3e-4
    assert not run_dir.exists() and not dist.is_initialized()

    assert main(["--config", str(CONFIG_DIR / "tiny.json"), "--set", "optim.lrr=1", "--print-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        "error: --set optim.lrr=1: unknown key (did you mean optim.lr?)"]


@pytest.mark.parametrize("file_data, overrides, expected", [
    ({}, ["train.max_step=4"], "--set train.max_step=4: unknown key (did you mean train.max_steps?)"),
    ({}, ["train.max_steps=four"], "--set train.max_steps=four: expected int, got str 'four'"),
    ({}, ["model.cross_heads=3"], "--set model.cross_heads=3: 3 does not divide model.d_model=256"),
    ({}, ['data.train=[{"path": "a", "weight": 0}]'],
     '--set data.train=[{"path": "a", "weight": 0}]: data.train[0].weight: must be > 0, got 0.0'),
    ({}, ["nosuch.key=1"], "--set nosuch.key=1: nosuch: unknown key (known: data, deepspeed, eval, log, masking, "
                           "model, objective, optim, train)"),
    ({"train": {"max_step": 4}}, ["train.max_steps=5"],
     "{file}: train.max_step: unknown key (did you mean train.max_steps?)"),
    ({"model": {"cross_heads": 3}}, ["train.max_steps=5"],
     "{file}: model.cross_heads: 3 does not divide model.d_model=256"),
    ({"train": {"max_steps": 0}}, ["train.max_steps=5"], None),  # the --set wins: no error
    ({}, ["train.max_steps"], "--set 'train.max_steps': expected section.key=value"),
])
def test_an_error_names_the_set_or_the_file_its_key_came_from(tmp_path, file_data, overrides, expected):
    """A typo in ``--set`` is the command line's, not the config file's: the error names the ``--set``; a bad key
    in the file still names the file."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps(file_data))
    if expected is None:
        assert load_config(path, overrides).train.max_steps == 5
        return
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert str(info.value) == expected.replace("{file}", str(path))


def test_every_option_has_a_help_text():
    """docs/CONFIG.md gets a description of every key from ``option(..., help=...)``; none may be left out."""
    from unimodal_free.config.rules import anything, option
    from unimodal_free.config.validation import iter_options

    with pytest.raises(TypeError, match="needs a help text"):
        option(3, anything)
    cfg = load_config(None, ["data.train=a", "data.heldout=b"])  # Source fields too
    assert all(f.metadata["help"] for _, _, f in iter_options(cfg, ""))
