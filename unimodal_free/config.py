"""Typed run configuration: one JSON file -> nested dataclasses.

Defaults live here; a JSON file and dotted ``--set section.key=value``
overrides replace them. Unknown keys, wrong types and values outside a
field's rule (declared with the field: ``option(default, rule, help=...)``)
fail with the dotted path in a one-line :class:`ConfigError`, before any
process group starts. docs/CONFIG.md is generated from these declarations
(``python -m unimodal_free.config_reference``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

MODALITIES = ("image", "speech", "text")
# The shipped configs (joint.json, joint-base.json, tiny.json): package data, so an installed wheel has
# them; in a checkout the top-level configs/ is a symlink to this folder (one copy of each file).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A config value is wrong; the message names its dotted path."""


# ---------------------------------------------------------------- value rules
# Every field is declared with ``option(default, rule, help=...)``: the rule says what values it
# takes (the type annotation is checked first, while building). A rule maps the value to None when
# it is fine, or to what is wrong ("must be > 0, got 0"); ``validate`` prefixes the dotted path. A
# rule's ``text`` says what it accepts, for docs/CONFIG.md. ``fixed=True`` marks a key that cannot
# change when a run resumes (the checkpoint's weights or data position depend on it); a callable
# instead gives the part of the value that cannot change. Rules between fields live in
# ``_relations`` below.
Rule = Callable[[Any], Optional[str]]


def _described(text: str) -> Callable[[Rule], Rule]:
    """Attach what a rule accepts (``rule.text``) for the config reference."""

    def attach(rule: Rule) -> Rule:
        rule.text = text
        return rule

    return attach


def _finite(value: Any) -> Optional[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    return None


def at_least(low: float) -> Rule:
    @_described(f">= {low}")
    def rule(value):
        return _finite(value) or (None if value >= low else f"must be >= {low}, got {value}")

    return rule


def in_range(low: float, high: float, high_open: bool = False, low_open: bool = False) -> Rule:
    shown = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    @_described(f"in {shown}")
    def rule(value):
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return _finite(value) or (None if above and below else f"must be in {shown}, got {value}")

    return rule


@_described("> 0")
def positive(value: Any) -> Optional[str]:
    return _finite(value) or (None if value > 0 else f"must be > 0, got {value}")


def one_of(*choices: Any) -> Rule:
    @_described("one of " + ", ".join(json.dumps(c) for c in choices))
    def rule(value):
        return None if value in choices else f"{value!r} is not one of {list(choices)}"

    return rule


@_described("not empty")
def not_empty(value: Any) -> Optional[str]:
    return None if value else "must not be empty"


@_described("any")
def anything(value: Any) -> Optional[str]:
    """Any value of the annotated type (flags, free paths, ``deepspeed.extra``)."""
    return None


def each(rule: Rule, length: Optional[int] = None, increasing: bool = False) -> Rule:
    """A list whose items all pass ``rule`` (with an exact length, strictly increasing)."""
    shape = "".join([f", exactly {length}" if length is not None else "", ", strictly increasing" if increasing else ""])

    @_described(f"each {rule.text}{shape}")
    def check(values):
        if length is not None and len(values) != length:
            return f"must hold {length} values, got {len(values)}: {values}"
        for i, v in enumerate(values):
            if (err := rule(v)) is not None:
                return f"item {i}: {err}"
        if increasing and any(a >= b for a, b in zip(values, values[1:])):
            return f"must be strictly increasing, got {values}"
        return None

    return check


def per_modality(rule: Rule) -> Rule:
    """A dict from modality names (``MODALITIES``) to values that pass ``rule``."""

    @_described(f"keys in {', '.join(MODALITIES)}; values {rule.text}")
    def check(values):
        for name, v in values.items():
            if name not in MODALITIES:
                return f"{name!r} is not a modality (known: {', '.join(MODALITIES)})"
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return f"{name}: must be a number, got {v!r}"
            if (err := rule(v)) is not None:
                return f"{name}: {err}"
        return None

    return check


def option(default: Any = dataclasses.MISSING, rule: Optional[Rule] = None, *, factory: Any = dataclasses.MISSING,
           fixed: Union[bool, Callable[[Any], Any]] = False, help: str = "") -> Any:
    """A config field with its rule, whether it may change on resume, and what it does (``help``:
    docs/CONFIG.md is generated from it), next to its default."""
    if rule is None:
        raise TypeError("option(): every config field needs a rule (`anything` for any value of its type)")
    if not help.strip():
        raise TypeError("option(): every config field needs a help text (it becomes its line in docs/CONFIG.md)")
    meta = {"rule": rule, "fixed": fixed, "help": " ".join(help.split())}
    return field(default=default, default_factory=factory, metadata=meta)


@dataclass
class ModelConfig:
    """The network's shape. Every key but ``dropout`` and ``activation_checkpointing`` shapes the
    weights or what they mean, so it is fixed on resume."""

    d_model: int = option(256, positive, fixed=True, help="Width of every latent and of the shared element projection.")
    num_latents: int = option(64, positive, fixed=True,
                              help="N: the fixed-size latent array every input is squeezed into.")
    num_blocks: int = option(6, positive, fixed=True,
                             help="L: shared latent self-attention blocks after the cross-attention.")
    num_heads: int = option(4, positive, fixed=True,
                            help="Attention heads of the latent self-attention blocks (must divide model.d_model).")
    cross_heads: int = option(1, positive, fixed=True,
                              help="Attention heads of the element-to-latent cross-attention (must divide model.d_model).")
    mlp_ratio: float = option(4.0, positive, fixed=True, help="Hidden width of every MLP as a multiple of model.d_model.")
    fourier_bands: int = option(16, positive, fixed=True,
                                help="Fourier position features per coordinate axis (sin and cos of each band).")
    fourier_max_freq: float = option(64.0, at_least(2), fixed=True,
                                     help="The highest Fourier frequency is fourier_max_freq / 2: it resolves that "
                                          "many positions per axis.")
    text_embed_dim: int = option(128, positive, fixed=True,
                                 help="Width of the text token embedding before padding to the common element width.")
    dropout: float = option(0.0, in_range(0, 1, high_open=True), help="Dropout in the attention and MLP blocks.")
    standardize_values: bool = option(False, anything, fixed=True,
                                      help="Standardise continuous element values per sample (minus the row's mean "
                                           "element, over the row's std) before embedding: removes an image's "
                                           "background colour and a recording's channel, which otherwise dominate "
                                           "what uniform attention reads.")
    activation_checkpointing: bool = option(False, anything,
                                            help="Recompute each latent/cross/predictor block's activations in "
                                                 "backward instead of keeping them (torch.utils.checkpoint): the R "
                                                 "views x rows of latents dominate a large step's memory (README "
                                                 "\"Memory\"); costs one more student forward. Same weights either "
                                                 "way, so it may change on resume.")
    latent_stacks: str = option("shared", one_of("shared", "per_modality"), fixed=True,
                                help="\"shared\": one latent stack for every modality (the project's model). "
                                     "\"per_modality\": each modality gets its own model.num_blocks latent blocks, "
                                     "same width (same FLOPs per sample, num-modalities x the latent-stack "
                                     "parameters); latent array, cross-attention, embedding, predictor and "
                                     "alignment head stay shared. For the shared-vs-separate experiment.")


@dataclass
class Source:
    """One data source: a path and its sampling weight (a bare string means weight 1)."""

    path: str = option("", not_empty,
                       help="A shard directory, glob, brace pattern or URL (pipe:, http(s)://).")
    weight: float = option(1.0, positive, help="Relative sampling weight among the sources of the same list.")


@dataclass
class DataConfig:
    """Where samples come from and how they become elements. The keys from ``patch_size`` to
    ``max_text_tokens`` are fixed on resume: element widths and what a coordinate means."""

    train: list[Source] = option(rule=anything, factory=list,  # each Source checks its own fields
                                 help="Training sources; empty: the embedded demo data (generated on demand).")
    heldout: list[Source] = option(rule=anything, factory=list,
                                   help="Held-out paired shards for the retrieval eval; empty: the demo's held-out "
                                        "split.")
    demo_dir: str = option("~/.cache/unimodal_free/demo", not_empty,
                           help="Where the demo data is generated and cached.")
    tokenizer: str = option("demo", not_empty,
                            help="\"bytes\" (UTF-8, no tokenizer), a sentencepiece .model path, or \"demo\" (the "
                                 "tokenizer trained with the demo data). Resume compares the tokenizer itself "
                                 "(sha256), not its path.")
    image_size: int = option(64, positive, help="Images are resized and centre-cropped to this many pixels a side.")
    patch_size: int = option(8, positive, fixed=True,
                             help="Image patch side in pixels: one image element per patch (must divide "
                                  "data.image_size).")
    sample_rate: int = option(16000, at_least(100), fixed=True,
                              help="Speech is resampled to this rate (Hz); at least 100 so the 10 ms hop is one "
                                   "sample or more.")
    n_mels: int = option(64, positive, fixed=True, help="Log-mel bands per speech frame.")
    frames_per_element: int = option(4, positive, fixed=True,
                                     help="Log-mel frames (10 ms hop each) stacked into one speech element.")
    max_speech_seconds: float = option(6.0, positive, fixed=True,
                                       help="Longer speech is cut to this; also the time that speech coordinate 1 "
                                            "means.")
    max_text_tokens: int = option(64, positive, fixed=True,
                                  help="Longer captions are cut to this many tokens; also the index that text "
                                       "coordinate 1 means.")
    split_pairs: bool = option(True, anything,
                               help="Split multi-modality samples into unimodal rows (the pair id is kept for "
                                    "alignment).")
    num_workers: int = option(1, at_least(0), fixed=True,
                              help="DataLoader worker processes per rank. Fixed on resume: the data position is "
                                   "counted per worker.")
    shuffle_buffer: int = option(500, at_least(0), help="Samples in the shuffle buffer; 0 or 1: no shuffling.")
    epoch_samples: int = option(100000, positive,
                                help="A nominal epoch in rows over all ranks: the training stream is infinite "
                                     "(resampled), so this only scales the logged train/epoch = samples seen / "
                                     "epoch_samples.")
    bucket_boundaries: list[int] = option(rule=each(positive, increasing=True),
                                          factory=lambda: [16, 32, 64, 128, 256, 512],
                                          help="Element-count bucket boundaries used when batching (per modality); "
                                               "[]: no bucketing.")
    max_member_bytes: int = option(32 << 20, positive,
                                   help="Bounded cost per sample (hostile or broken files): a tar member larger than "
                                        "this is refused unread (counted). 32 MiB holds a 40-megapixel JPEG or 15 "
                                        "min of 16 kHz WAV, and the shuffle buffer keeps up to data.shuffle_buffer "
                                        "samples in memory at once.")
    max_caption_lines: int = option(16, positive,
                                    help="Captions kept per text member (eval makes one row per caption; COCO has "
                                         "5-7).")
    max_caption_chars: int = option(8192, positive,
                                    help="Characters of a caption kept before tokenizing: far more than "
                                         "data.max_text_tokens pieces span (a sentencepiece piece is at most 16 "
                                         "characters), far less than a 50 MB line.")
    read_timeout_s: float = option(60.0, positive,
                                   help="A source (pipe:, http) that sends no byte for this long is a stalled shard: "
                                        "skipped, counted.")
    max_skips_in_row: int = option(20000, positive,
                                   help="This many skipped samples in a row with no decodable one between them stop "
                                        "the run (exit 2, naming sources and reasons): twice the shard writer's "
                                        "default shard, so one broken shard alone never trips it, while a source "
                                        "that cannot decode anything ends in seconds.")


@dataclass
class MaskingConfig:
    """What the student does not see (data2vec 2.0 defaults)."""

    image_ratio: float = option(0.8, in_range(0, 1, high_open=True), help="Share of image patches masked per row.")
    image_inverse_block: bool = option(True, anything,
                                       help="Inverse block masking (data2vec 2.0): blocks are kept, the rest "
                                            "masked.")
    image_block: int = option(3, positive, help="Side of an image mask block, in patches.")
    speech_ratio: float = option(0.5, in_range(0, 1, high_open=True), help="Share of speech elements masked per row.")
    speech_span: int = option(5, positive, help="Length of a masked speech span, in elements.")
    text_ratio: float = option(0.48, in_range(0, 1, high_open=True), help="Share of text tokens masked per row.")
    text_span: int = option(1, positive, help="Length of a masked text span, in tokens.")


@dataclass
class ObjectiveConfig:
    """The data2vec regression, its EMA teacher, the collapse guard and the optional InfoNCE alignment."""

    target_space: str = option("latents", one_of("latents", "elements"), fixed=True,
                               help="\"latents\": regress the teacher's latent array slot by slot; \"elements\": "
                                    "regress per-element targets at the masked positions.")
    top_k: int = option(4, positive,
                        help="Teacher blocks whose outputs are averaged into the targets (at most "
                             "model.num_blocks).")
    instance_norm: bool = option(True, anything, help="Instance-normalise each of the top-K block outputs first.")
    final_layer_norm: bool = option(False, anything, help="Layer-normalise the averaged targets.")
    loss: str = option("mse", one_of("mse", "smooth_l1"), help="Regression loss, scaled by 1/sqrt(d_model).")
    smooth_l1_beta: float = option(0.25, at_least(0), help="Beta of the smooth L1 loss.")
    num_views: int = option(4, positive, help="R masked views per sample sharing one teacher pass.")
    modality_weights: dict[str, float] = option(rule=per_modality(at_least(0)), factory=dict,
                                                help="Weight of each modality's data2vec loss (missing modalities: "
                                                     "1.0). Each modality's loss is the mean over its own rows on all "
                                                     "ranks, and the data2vec loss the weighted mean of the "
                                                     "modalities present: a modality in 5% of the rows trains as "
                                                     "much as one in 90%. Lower a rare modality's weight if it "
                                                     "overfits.")
    predictor_blocks: int = option(2, at_least(0), fixed=True,
                                   help="Latent blocks of the student's predictor (target_space \"latents\").")
    ema_start: float = option(0.999, in_range(0, 1, low_open=True), help="Teacher EMA decay at step 0.")
    ema_end: float = option(0.9999, in_range(0, 1, low_open=True),
                            help="Teacher EMA decay after objective.ema_anneal_steps (linear in between).")
    ema_anneal_steps: int = option(1000, at_least(0), help="Applied steps over which the EMA decay anneals.")
    align_weight: float = option(1.0, at_least(0), fixed=lambda weight: weight > 0,
                                 help="Weight of the symmetric InfoNCE loss between paired modalities; 0 turns it "
                                      "off and drops its head (on/off is fixed on resume, the weight itself may "
                                      "change).")
    align_dim: int = option(128, positive, fixed=True, help="Width of the alignment projection.")
    align_input: str = option("masked", one_of("masked", "full"),
                              help="Student latents pooled for alignment: \"masked\" = mean over the R masked views "
                                   "(no extra compute); \"full\" = one more student pass on the unmasked input.")
    init_temperature: float = option(0.07, positive, help="Initial InfoNCE temperature (learned).")
    min_target_std: float = option(0.1, at_least(0),
                                   help="Collapse guard: stop when the across-sample target std of a modality falls "
                                        "below this after the warm-up (fairseq: 0.1).")
    min_pred_std: float = option(0.01, at_least(0),
                                 help="Collapse guard: the same for the predictions (fairseq: 0.01).")
    collapse_warmup_steps: int = option(5000, at_least(0),
                                        help="Steps before the collapse guard judges (fairseq: 5k updates).")
    collapse_min_rows: int = option(8, at_least(2),
                                    help="The guard judges a modality only when the log interval gave it at least "
                                         "this many rows over all ranks: the across-sample std of 1 row is 0 and of "
                                         "none undefined, which is no collapse; with >= 8 rows it is far from 0 "
                                         "unless every sample has the same target.")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = option(5e-4, positive, help="Peak learning rate, reached after optim.warmup_steps.")
    min_lr: float = option(1e-5, at_least(0), help="Learning rate at the end of the cosine decay (at most optim.lr).")
    weight_decay: float = option(0.05, at_least(0), help="AdamW weight decay (not on biases, norm gains and other 1-d parameters).")
    betas: list[float] = option(rule=each(in_range(0, 1, high_open=True), length=2), factory=lambda: [0.9, 0.98],
                                help="AdamW betas.")
    eps: float = option(1e-6, positive, help="AdamW epsilon.")
    warmup_steps: int = option(50, at_least(0), help="Linear learning-rate warm-up steps.")
    grad_clip: float = option(1.0, at_least(0), help="Gradient norm clipping; 0: no clipping.")


@dataclass
class TrainConfig:
    """The run: length, batch, output, checkpoints and precision."""

    max_steps: int = option(600, positive, help="Optimizer steps of the run.")
    micro_batch_size: int = option(32, positive,
                                   help="Rows per rank per micro-batch (a row is one modality of a sample; "
                                        "train batch = micro x grad_accum x ranks).")
    grad_accum: int = option(1, positive, help="Micro-batches accumulated per optimizer step.")
    seed: int = option(0, in_range(0, 2**32, high_open=True), help="Seed of weights, masks and the data order.")
    output_dir: str = option("runs/joint", not_empty,
                             help="The run directory: resolved config, checkpoints, TensorBoard events, export.")
    resume: str = option("", anything,
                         help="\"\": fresh run; \"auto\": the latest good checkpoint in train.output_dir if any; or "
                              "a checkpoint path.")
    checkpoint_every: int = option(200, positive, help="Steps between checkpoints.")
    keep_last: int = option(2, positive, help="Checkpoints kept; older ones are deleted.")
    log_every: int = option(10, positive, help="Steps between logged (and rank-reduced) metrics.")
    max_nonfinite_in_row: int = option(5, positive,
                                       help="This many skipped non-finite steps in a row save a checkpoint and stop "
                                            "the run (exit 4).")
    precision: str = option("fp32", one_of("fp32", "bf16"), fixed=True,
                            help="\"fp32\" or \"bf16\" (DeepSpeed's bf16: bf16 student weights and activations, fp32 "
                                 "master weights; the EMA teacher and the targets stay fp32; README \"Precision\"). "
                                 "Fixed on resume: DeepSpeed's optimizer state differs.")
    compile: bool = option(False, anything,
                           help="torch.compile the student's encoder (cross-attention + latent stack) in place (same "
                                "parameter names, so checkpoints are unchanged). Opt-in: compiling takes minutes "
                                "before the first step.")


@dataclass
class EvalConfig:
    """The periodic retrieval eval on the held-out sources."""

    every: int = option(200, at_least(0), help="Steps between retrieval evals; 0: no periodic eval.")
    max_samples: int = option(1000, positive, help="Held-out samples read per eval.")
    model: str = option("teacher", one_of("teacher", "student"), help="Which weights embed the held-out samples.")
    pooling: str = option("mean", one_of("mean"), help="How the final latents become one embedding.")
    max_time_share: float = option(0.2, in_range(0, 1),
                                   help="Eval may take at most this share of wall time; skipped beyond it.")
    min_queries: int = option(20, positive,
                              help="A retrieval direction with fewer queries (held-out pairs that have both "
                                   "modalities) is flagged too small to read: with 20 queries one hit moves R@k by 5 "
                                   "points.")


@dataclass
class LogConfig:
    """What rank 0 reports."""

    tensorboard: bool = option(True, anything, help="Write TensorBoard events under the run directory.")
    progress: bool = option(True, anything, help="The tqdm bar, where stderr is a terminal; plain progress lines go to log.txt (and to stdout wherever it is not a terminal showing the bar) either way.")
    deepspeed_verbose: bool = option(False, anything, help="DeepSpeed's own start-up lines (accelerator detection, untested optimizer, ...) at their own level and its logger at INFO; off: those lines are demoted below warning (train/ds_noise.py).")


@dataclass
class DeepSpeedConfig:
    """The generated DeepSpeed dict (train/ds_config.py builds it from the typed fields)."""

    zero_stage: int = option(0, one_of(0, 1, 2, 3), fixed=lambda stage: "1-2" if stage in (1, 2) else stage,
                             help="ZeRO stage. Fixed on resume but for 1 <-> 2: DeepSpeed writes other checkpoint "
                                  "files without ZeRO and under ZeRO-3 (ZeRO-1 and -2 share one optimizer and its "
                                  "files).")
    ema_gather_numel: int = option(1 << 25, positive,
                                   help="ZeRO-3: the EMA update gathers the partitioned student in chunks of at most "
                                        "this many elements (one chunk in memory at a time, not a second full copy of "
                                        "the model).")
    extra: dict[str, Any] = option(rule=anything, factory=dict,
                                   help="Extra keys merged into the generated DeepSpeed dict (expert use; keys that "
                                        "contradict the typed fields are refused by train/ds_config.py).")


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


def _relations(cfg: Config) -> Iterator[tuple[str, bool, str]]:
    """Rules between fields: (dotted path, holds, what is wrong). Run after every field passed its own rule."""
    from unimodal_free.data.elements import HOP_SECONDS, N_FFT_SECONDS  # the log-mel analysis

    m, d, o = cfg.model, cfg.data, cfg.objective
    yield "model.num_heads", m.d_model % m.num_heads == 0, f"{m.num_heads} does not divide model.d_model={m.d_model}"
    yield ("model.cross_heads", m.d_model % m.cross_heads == 0,
           f"{m.cross_heads} does not divide model.d_model={m.d_model}")
    yield ("model.mlp_ratio", int(m.d_model * m.mlp_ratio) >= 1,
           f"{m.mlp_ratio} x model.d_model={m.d_model} leaves an MLP without hidden units")
    yield "data.patch_size", d.image_size % d.patch_size == 0, f"{d.patch_size} does not divide data.image_size={d.image_size}"
    fft_bins = round(N_FFT_SECONDS * d.sample_rate) // 2 + 1
    yield ("data.n_mels", d.n_mels <= fft_bins,
           f"{d.n_mels} mel bands exceed the {fft_bins} FFT bins at data.sample_rate={d.sample_rate}")
    shortest = N_FFT_SECONDS + (d.frames_per_element - 1) * HOP_SECONDS
    yield ("data.max_speech_seconds", d.max_speech_seconds >= shortest,
           f"{d.max_speech_seconds} s holds no speech element of data.frames_per_element={d.frames_per_element} "
           f"frames (needs >= {shortest:.3f} s)")
    yield "objective.top_k", o.top_k <= m.num_blocks, f"{o.top_k} exceeds model.num_blocks={m.num_blocks}"
    yield "objective.ema_end", o.ema_start <= o.ema_end, f"{o.ema_end} is below objective.ema_start={o.ema_start}"
    yield "optim.min_lr", cfg.optim.min_lr <= cfg.optim.lr, f"{cfg.optim.min_lr} exceeds optim.lr={cfg.optim.lr}"


def _options(obj: Any, path: str) -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(dotted path, value, field) of every option in ``obj``, nested sections and sources included."""
    for f in dataclasses.fields(obj):
        where = f"{path}.{f.name}" if path else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _options(value, where)
            continue
        yield where, value, f
        if isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from _options(item, f"{where}[{i}]")


def validate(cfg: Config) -> None:
    """Every field's rule, then the rules between fields; the first failure raises, naming its path."""
    for where, value, f in _options(cfg, ""):
        if (err := f.metadata.get("rule", anything)(value)) is not None:
            raise ConfigError(f"{where}: {err}")
    for where, holds, err in _relations(cfg):
        if not holds:
            raise ConfigError(f"{where}: {err}")


def fixed_on_resume(before: dict[str, Any], cfg: Config) -> list[str]:
    """``path: old -> new`` for every option marked ``fixed`` that differs from ``before``
    (a checkpoint's stored config, as ``config_to_dict`` wrote it)."""
    out = []
    for where, value, f in _options(cfg, ""):
        fixed = f.metadata.get("fixed", False)
        if not fixed:
            continue
        node: Any = before
        for key in where.split("."):
            node = node.get(key, dataclasses.MISSING) if isinstance(node, dict) else dataclasses.MISSING
        if node is dataclasses.MISSING:
            continue  # a key newer than the checkpoint: nothing to compare with
        same = node == value if fixed is True else fixed(node) == fixed(value)
        if not same:
            out.append(f"{where}: {node!r} -> {value!r}")
    return out


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
    validate(cfg)
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
