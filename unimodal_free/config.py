"""Typed run configuration: one JSON file -> nested dataclasses.

Defaults live here; a JSON file and dotted ``--set section.key=value``
overrides replace them. Unknown keys and wrong types fail with the dotted
path in a one-line :class:`ConfigError`, before any process group starts.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

MODALITIES = ("image", "speech", "text")


class ConfigError(ValueError):
    """A config value is wrong; the message names its dotted path."""


@dataclass
class ModelConfig:
    # Width of every latent and of the shared element projection.
    d_model: int = 256
    # N: the fixed-size latent array every input is squeezed into.
    num_latents: int = 64
    # L: shared latent self-attention blocks after the cross-attention.
    num_blocks: int = 6
    num_heads: int = 4
    cross_heads: int = 1
    mlp_ratio: float = 4.0
    # Fourier position features per coordinate axis (sin+cos of each band).
    fourier_bands: int = 16
    # Highest Fourier frequency is fourier_max_freq / 2: resolves that many positions per axis.
    fourier_max_freq: float = 64.0
    # Width of the text token embedding before padding to the common width.
    text_embed_dim: int = 128
    dropout: float = 0.0
    # Standardise continuous element values per sample (minus the row's mean element,
    # over the row's std) before embedding: removes an image's background colour and a
    # recording's channel, which otherwise dominate what uniform attention reads.
    standardize_values: bool = False
    # Recompute each latent/cross/predictor block's activations in backward instead of keeping
    # them (torch.utils.checkpoint): the R views x rows of latents dominate a large step's memory
    # (base config, micro 64 x 8 views: see README "Memory"); costs one more student forward.
    activation_checkpointing: bool = False


@dataclass
class Source:
    # A shard directory, glob, brace pattern or URL (pipe:, http(s)://).
    path: str = ""
    weight: float = 1.0


@dataclass
class DataConfig:
    # Training sources; empty -> the embedded demo data (generated on demand).
    train: list[Source] = field(default_factory=list)
    # Held-out paired shards for retrieval eval; empty -> demo held-out split.
    heldout: list[Source] = field(default_factory=list)
    # Where the demo data is generated and cached.
    demo_dir: str = "~/.cache/unimodal_free/demo"
    # "bytes" (UTF-8, no tokenizer) or a sentencepiece .model path;
    # "demo" -> the tokenizer trained with the demo data.
    tokenizer: str = "demo"
    image_size: int = 64
    patch_size: int = 8
    sample_rate: int = 16000
    n_mels: int = 64
    # Log-mel frames stacked into one speech element (10 ms hop each).
    frames_per_element: int = 4
    max_speech_seconds: float = 6.0
    max_text_tokens: int = 64
    # Split multi-modality samples into unimodal rows (pair id kept).
    split_pairs: bool = True
    num_workers: int = 1
    shuffle_buffer: int = 500
    # A nominal epoch in rows over all ranks: the training stream is infinite (resampled), so this
    # only scales the logged train/epoch = samples seen / epoch_samples.
    epoch_samples: int = 100000
    # Element-count bucket boundaries used when batching (per modality).
    bucket_boundaries: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])


@dataclass
class MaskingConfig:
    image_ratio: float = 0.8
    # Inverse block masking (data2vec 2.0): blocks are kept, the rest masked.
    image_inverse_block: bool = True
    image_block: int = 3
    speech_ratio: float = 0.5
    speech_span: int = 5
    text_ratio: float = 0.48
    text_span: int = 1


@dataclass
class ObjectiveConfig:
    # "latents": regress the teacher's latent array slot by slot;
    # "elements": regress per-element targets at masked positions.
    target_space: str = "latents"
    top_k: int = 4
    instance_norm: bool = True
    final_layer_norm: bool = False
    loss: str = "mse"
    smooth_l1_beta: float = 0.25
    # R masked views per sample sharing one teacher pass.
    num_views: int = 4
    # Weight of each modality's data2vec loss (missing modalities: 1.0). Each modality's loss is
    # the mean over its own rows on all ranks, and the data2vec loss the weighted mean of the
    # modalities present: a modality in 5% of the rows trains as much as one in 90% (weighting
    # by rows would give it 5% of the gradient). Lower a rare modality's weight if it overfits.
    modality_weights: dict[str, float] = field(default_factory=dict)
    predictor_blocks: int = 2
    ema_start: float = 0.999
    ema_end: float = 0.9999
    ema_anneal_steps: int = 1000
    # Symmetric InfoNCE between paired modalities; 0 turns it off.
    align_weight: float = 1.0
    align_dim: int = 128
    # Student latents pooled for alignment: "masked" = mean over the R masked views
    # (no extra compute); "full" = one more student pass on the unmasked input.
    align_input: str = "masked"
    init_temperature: float = 0.07
    # Collapse guard (fairseq: 0.1 / 0.01 after 5k updates).
    min_target_std: float = 0.1
    min_pred_std: float = 0.01
    collapse_warmup_steps: int = 5000


@dataclass
class OptimConfig:
    lr: float = 5e-4
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 50
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    max_steps: int = 600
    micro_batch_size: int = 32
    grad_accum: int = 1
    seed: int = 0
    output_dir: str = "runs/joint"
    # "" = fresh run, "auto" = latest good checkpoint if any, or a path.
    resume: str = ""
    checkpoint_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    max_nonfinite_in_row: int = 5
    # "fp32" or "bf16".
    precision: str = "fp32"


@dataclass
class EvalConfig:
    every: int = 200
    max_samples: int = 1000
    model: str = "teacher"
    pooling: str = "mean"
    # Eval may take at most this share of wall time; skipped beyond it.
    max_time_share: float = 0.2
    # A retrieval direction with fewer queries (held-out pairs that have both modalities) is
    # flagged too small to read: with 20 queries one hit moves R@k by 5 points.
    min_queries: int = 20


@dataclass
class LogConfig:
    tensorboard: bool = True
    progress: bool = True


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 0
    # ZeRO-3: the EMA update gathers the partitioned student in chunks of at most this many
    # elements (one chunk in memory at a time, not a second full copy of the model).
    ema_gather_numel: int = 1 << 25
    # Extra keys merged into the generated DeepSpeed dict (expert use).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)


CHOICES = {
    "objective.target_space": ("latents", "elements"),
    "objective.loss": ("mse", "smooth_l1"),
    "objective.align_input": ("masked", "full"),
    "train.precision": ("fp32", "bf16"),
    "eval.model": ("teacher", "student"),
    "eval.pooling": ("mean",),
    "deepspeed.zero_stage": (0, 1, 2, 3),
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if tp is Source and isinstance(value, str):
            value = {"path": value}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object for {tp.__name__}, got {value!r}")
        return _build(tp, value, path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: bad value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, dict)) and dataclasses.is_dataclass(item_tp):
            value = [value]  # a single source may be given bare
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected an object, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], path: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        kwargs[key] = _convert(value, hints[key], where)
    return cls(**kwargs)


def _validate(cfg: Config) -> None:
    for dotted, allowed in CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{dotted}: {value!r} is not one of {list(allowed)}")
    positive = {
        "model.d_model": cfg.model.d_model,
        "model.num_latents": cfg.model.num_latents,
        "model.num_blocks": cfg.model.num_blocks,
        "model.num_heads": cfg.model.num_heads,
        "data.image_size": cfg.data.image_size,
        "data.patch_size": cfg.data.patch_size,
        "train.micro_batch_size": cfg.train.micro_batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "objective.num_views": cfg.objective.num_views,
        "objective.top_k": cfg.objective.top_k,
        "eval.min_queries": cfg.eval.min_queries,
    }
    for dotted, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{dotted}: must be > 0, got {value}")
    if cfg.model.d_model % cfg.model.num_heads:
        raise ConfigError(
            f"model.d_model: {cfg.model.d_model} is not divisible by model.num_heads={cfg.model.num_heads}"
        )
    if cfg.data.image_size % cfg.data.patch_size:
        raise ConfigError(
            f"data.patch_size: {cfg.data.patch_size} does not divide data.image_size={cfg.data.image_size}"
        )
    if cfg.objective.top_k > cfg.model.num_blocks:
        raise ConfigError(
            f"objective.top_k: {cfg.objective.top_k} exceeds model.num_blocks={cfg.model.num_blocks}"
        )
    for name in ("image_ratio", "speech_ratio", "text_ratio"):
        ratio = getattr(cfg.masking, name)
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"masking.{name}: must be in [0, 1), got {ratio}")
    if not 0.0 < cfg.objective.ema_start <= cfg.objective.ema_end <= 1.0:
        raise ConfigError(
            f"objective.ema_start/ema_end: need 0 < start <= end <= 1, got "
            f"{cfg.objective.ema_start}, {cfg.objective.ema_end}"
        )
    for name, weight in cfg.objective.modality_weights.items():
        if name not in MODALITIES:
            raise ConfigError(f"objective.modality_weights.{name}: unknown modality (known: {', '.join(MODALITIES)})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"objective.modality_weights.{name}: must be a number >= 0, got {weight!r}")
    if cfg.objective.align_weight < 0:
        raise ConfigError(f"objective.align_weight: must be >= 0, got {cfg.objective.align_weight}")
    for i, src in enumerate(cfg.data.train + cfg.data.heldout):
        if src.weight <= 0:
            raise ConfigError(f"data source {src.path!r}: weight must be > 0, got {src.weight}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], value); value parsed as JSON if it can be."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    dotted, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return dotted.strip().split("."), value


def config_from_dict(data: dict[str, Any], overrides: list[str] = ()) -> Config:
    """Build and validate a :class:`Config` from a JSON-like dict plus dotted overrides."""
    data = json.loads(json.dumps(data))  # deep copy
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {'.'.join(keys[: i + 1])} is not a section")
            node = child
        node[keys[-1]] = value
    cfg = _build(Config, data, "")
    _validate(cfg)
    return cfg


def load_config(path: Union[str, Path, None], overrides: list[str] = ()) -> Config:
    """Read a JSON config file (or defaults if ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a JSON object")
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Union[str, Path]) -> None:
    """Write the resolved config as JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
