"""The config's sections, one dataclass each: every key with its default, rule, resume rule and help.

Each section stands alone (no section refers to another), so code takes the section it needs
(``cfg.model``, ``cfg.data``, ...). Values that combine sections are rules between fields
(``validation.relations``), never fields. docs/CONFIG.md is generated from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unimodal_free.config.rules import (
    anything,
    count,
    at_least,
    each,
    in_range,
    not_empty,
    one_of,
    option,
    per_modality,
    positive,
)
from unimodal_free.modalities import MODALITY

# Upper bounds of integer keys (config/rules.count): far above any real run, far below what would exhaust a
# machine before the budgets (config/budget.py) are even computed. docs/CONFIG.md shows each key's.
WIDTH = 1 << 16  # widths, heads, latents, spans
DEPTH = 512  # blocks of a stack
ROWS = 1 << 16  # rows per micro-batch, micro-batches per step
MANY = 10**12  # steps, samples and counters


@dataclass
class ModelConfig:
    """The network's shape. Every key but ``dropout`` and ``activation_checkpointing`` shapes the
    weights or what they mean, so it is fixed on resume."""

    d_model: int = option(256, count(1, WIDTH), fixed=True, help="Width of every latent and of the shared element projection.")
    num_latents: int = option(64, count(1, WIDTH), fixed=True,
                              help="N: the fixed-size latent array every input is squeezed into.")
    num_blocks: int = option(6, count(1, DEPTH), fixed=True,
                             help="L: shared latent self-attention blocks after the cross-attention.")
    num_heads: int = option(4, count(1, WIDTH), fixed=True,
                            help="Attention heads of the latent self-attention blocks (must divide model.d_model).")
    cross_heads: int = option(1, count(1, WIDTH), fixed=True,
                              help="Attention heads of the element-to-latent cross-attention (must divide model.d_model).")
    mlp_ratio: float = option(4.0, in_range(0, 64, low_open=True), fixed=True, help="Hidden width of every MLP as a multiple of model.d_model.")
    fourier_bands: int = option(16, count(1, 4096), fixed=True,
                                help="Fourier position features per coordinate axis (sin and cos of each band).")
    fourier_max_freq: float = option(64.0, at_least(2), fixed=True,
                                     help="The highest Fourier frequency is fourier_max_freq / 2: it resolves that "
                                          "many positions per axis.")
    text_embed_dim: int = option(128, count(1, WIDTH), fixed=True,
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
                                                 "views x rows of latents dominate a large step's memory "
                                                 "(docs/BENCHMARKS.md \"Memory\"); costs one more student forward. "
                                                 "Same weights either way, so it may change on resume.")
    element_summary: str = option("none", one_of("none", "max"), fixed=True,
                                  help="\"max\": every latent also receives a max over the input's elements of a "
                                       "small per-element MLP (model/summary.py), beside the cross-attention's "
                                       "weighted average. An average over elements dilutes a small object among "
                                       "background patches; a max keeps what any element shows (bag-of-features "
                                       "pooling), which lets pictures' shape be learned (docs/DESIGN.md, Findings). "
                                       "\"none\": the plain Perceiver cross-attention.")
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
class ImageAugmentConfig:
    """Training pictures only: transforms bounded so that a caption's position, size and colour words stay true
    (data/reading/image_augment.py). Eval, probes and embedding never augment."""

    enabled: bool = option(False, anything, help="Augment each training picture, after the resize and crop, before "
                                                   "it is cut into patches.")
    translate: float = option(0.04, in_range(0, 0.25),
                              help="Largest shift per axis, as a fraction of the side. 0.04 with data.image_augment."
                                   "scale and rotate at their defaults keeps a demo shape's centre in its cell of "
                                   "the 3x3 position grid (the demo already jitters centres by 0.04).")
    scale: float = option(0.1, in_range(0, 0.5, high_open=True),
                          help="Largest size change (factor 1 +- scale, about the centre): the demo's size classes "
                               "are 1.4-1.6x apart in radius.")
    rotate: float = option(5.0, in_range(0, 180),
                           help="Largest rotation in degrees, about the picture's centre, which moves a corner shape: "
                                "at 10 some demo corner shapes leave their cell.")
    brightness: float = option(0.1, in_range(0, 1, high_open=True),
                               help="Largest brightness change (factor 1 +- brightness on every channel alike: hue "
                                    "stays). At 0.2 a darkened yellow is nearer the demo's orange than its yellow.")
    contrast: float = option(0.1, in_range(0, 1, high_open=True),
                             help="Largest contrast change (factor 1 +- contrast on each pixel's distance from the "
                                  "picture's mean grey).")
    noise: float = option(0.02, in_range(0, 1),
                          help="Largest std of the Gaussian pixel noise, as a fraction of the intensity range "
                               "(each picture draws its std in [0, noise]).")
    hflip: bool = option(False, anything,
                         help="Mirror half the pictures left-right. Off: captions that say left or right would "
                              "become false.")


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
    image_size: int = option(64, count(1, 8192), help="Images are resized and centre-cropped to this many pixels a side.")
    patch_size: int = option(8, count(1, 8192), fixed=True,
                             help="Image patch side in pixels: one image element per patch (must divide "
                                  "data.image_size when patches do not overlap).")
    patch_stride: int = option(0, count(0, 8192), fixed=True,
                               help="Pixels between neighbouring image elements; 0: data.patch_size (non-overlapping "
                                    "patches). Smaller: overlapping patches, each the patch_size window centred on "
                                    "its cell of an image_size/patch_stride grid, mid-grey beyond the picture's "
                                    "edge (must divide data.image_size; patch_size - patch_stride even).")
    sample_rate: int = option(16000, count(100, 768_000), fixed=True,
                              help="Speech is resampled to this rate (Hz); at least 100 so the 10 ms hop is one "
                                   "sample or more.")
    n_mels: int = option(64, count(1, 4096), fixed=True, help="Log-mel bands per speech frame.")
    frames_per_element: int = option(4, count(1, 10**5), fixed=True,
                                     help="Log-mel frames (10 ms hop each) stacked into one speech element.")
    max_speech_seconds: float = option(6.0, in_range(0, 3600, low_open=True), fixed=True,
                                       help="Longer speech is cut to this; also the time that speech coordinate 1 "
                                            "means.")
    max_text_tokens: int = option(64, count(1, 10**6), fixed=True,
                                  help="Longer captions are cut to this many tokens; also the index that text "
                                       "coordinate 1 means.")
    image_augment: ImageAugmentConfig = option(rule=anything, factory=ImageAugmentConfig,  # each key checks itself
                                               help="Caption-safe augmentation of training pictures (the "
                                                    "data.image_augment.* keys).")
    split_pairs: bool = option(True, anything,
                               help="Split multi-modality samples into unimodal rows (the pair id is kept for "
                                    "alignment).")
    num_workers: int = option(1, count(0, 1024), fixed=True,
                              help="DataLoader worker processes per rank. Fixed on resume: the data position is "
                                   "counted per worker.")
    shuffle_buffer: int = option(500, count(0, 10**8), help="Samples in the shuffle buffer; 0 or 1: no shuffling.")
    epoch_samples: int = option(100000, count(1, MANY),
                                help="A nominal epoch in rows over all ranks: the training stream is infinite "
                                     "(resampled), so this only scales the logged train/epoch = samples seen / "
                                     "epoch_samples.")
    bucket_boundaries: list[int] = option(rule=each(count(1, 10**7), increasing=True),
                                          factory=lambda: [16, 32, 64, 128, 256, 512],
                                          help="Element-count bucket boundaries used when batching (per modality); "
                                               "[]: no bucketing.")
    max_member_bytes: int = option(32 << 20, count(1, 1 << 36),
                                   help="Bounded cost per sample (hostile or broken files): a tar member larger than "
                                        "this is refused unread (counted). 32 MiB holds a 40-megapixel JPEG or 15 "
                                        "min of 16 kHz WAV, and the shuffle buffer keeps up to data.shuffle_buffer "
                                        "samples in memory at once.")
    max_caption_lines: int = option(16, count(1, 10**6),
                                    help="Captions kept per text member (eval makes one row per caption; COCO has "
                                         "5-7).")
    max_caption_chars: int = option(8192, count(1, 10**9),
                                    help="Characters of a caption kept before tokenizing: far more than "
                                         "data.max_text_tokens pieces span (a sentencepiece piece is at most 16 "
                                         "characters), far less than a 50 MB line.")
    read_timeout_s: float = option(60.0, positive,
                                   help="A source (pipe:, http) that sends no byte for this long is a stalled shard: "
                                        "skipped, counted.")
    max_skips_in_row: int = option(20000, count(1, MANY),
                                   help="This many skipped samples in a row with no decodable one between them stop "
                                        "the run (exit 2, naming sources and reasons): twice the shard writer's "
                                        "default shard, so one broken shard alone never trips it, while a source "
                                        "that cannot decode anything ends in seconds.")

    @property
    def image_stride(self) -> int:
        """Pixels between neighbouring image elements (``patch_stride``, or ``patch_size`` when 0)."""
        return self.patch_stride or self.patch_size


_IMAGE, _SPEECH, _TEXT = (MODALITY[name].masking for name in ("image", "speech", "text"))
_RATIO = in_range(0, 1, high_open=True)


@dataclass
class MaskingConfig:
    """What the student does not see (data2vec 2.0 defaults)."""

    # One ratio, one block/span and optionally an inverse flag per modality: the modality table
    # (modalities.py) names these keys and holds their defaults; mask_spec reads them through it.
    image_ratio: float = option(_IMAGE.ratio_default, _RATIO, help="Share of image patches masked per row.")
    image_inverse_block: bool = option(_IMAGE.inverse_default, anything,
                                       help="Inverse block masking (data2vec 2.0): blocks are kept, the rest "
                                            "masked.")
    image_block: int = option(_IMAGE.block_default, count(1, WIDTH), help="Side of an image mask block, in patches.")
    speech_ratio: float = option(_SPEECH.ratio_default, _RATIO, help="Share of speech elements masked per row.")
    speech_span: int = option(_SPEECH.block_default, count(1, WIDTH), help="Length of a masked speech span, in elements.")
    text_ratio: float = option(_TEXT.ratio_default, _RATIO, help="Share of text tokens masked per row.")
    text_span: int = option(_TEXT.block_default, count(1, WIDTH), help="Length of a masked text span, in tokens.")


@dataclass
class ObjectiveConfig:
    """The data2vec regression, its EMA teacher, the collapse guard and the optional InfoNCE alignment."""

    target_space: str = option("latents", one_of("latents", "elements"), fixed=True,
                               help="\"latents\": regress the teacher's latent array slot by slot; \"elements\": "
                                    "regress per-element targets at the masked positions.")
    top_k: int = option(4, count(1, DEPTH),
                        help="Teacher blocks whose outputs are averaged into the targets (at most "
                             "model.num_blocks).")
    instance_norm: bool = option(True, anything, help="Instance-normalise each of the top-K block outputs first.")
    final_layer_norm: bool = option(False, anything, help="Layer-normalise the averaged targets.")
    loss: str = option("mse", one_of("mse", "smooth_l1"), help="Regression loss, scaled by 1/sqrt(d_model).")
    smooth_l1_beta: float = option(0.25, at_least(0), help="Beta of the smooth L1 loss.")
    num_views: int = option(4, count(1, 1024), help="R masked views per sample sharing one teacher pass.")
    modality_weights: dict[str, float] = option(rule=per_modality(at_least(0)), factory=dict,
                                                help="Weight of each modality's data2vec loss (missing modalities: "
                                                     "1.0). Each modality's loss is the mean over its own rows on all "
                                                     "ranks, and the data2vec loss the weighted mean of the "
                                                     "modalities present: a modality in 5% of the rows trains as "
                                                     "much as one in 90%. Lower a rare modality's weight if it "
                                                     "overfits.")
    predictor_blocks: int = option(2, count(0, DEPTH), fixed=True,
                                   help="Latent blocks of the student's predictor (target_space \"latents\").")
    ema_start: float = option(0.999, in_range(0, 1, low_open=True), help="Teacher EMA decay at step 0.")
    ema_end: float = option(0.9999, in_range(0, 1, low_open=True),
                            help="Teacher EMA decay after objective.ema_anneal_steps (linear in between).")
    ema_anneal_steps: int = option(1000, count(0, MANY), help="Applied steps over which the EMA decay anneals.")
    align_weight: float = option(1.0, at_least(0), fixed=lambda weight: weight > 0,
                                 help="Weight of the symmetric InfoNCE loss between paired modalities; 0 turns it "
                                      "off and drops its head (on/off is fixed on resume, the weight itself may "
                                      "change).")
    align_dim: int = option(128, count(1, WIDTH), fixed=True, help="Width of the alignment projection.")
    align_input: str = option("masked", one_of("masked", "full"),
                              help="Student latents pooled for alignment: \"masked\" = mean over the R masked views "
                                   "(no extra compute); \"full\" = one more student pass on the unmasked input.")
    init_temperature: float = option(0.07, positive, help="Initial InfoNCE temperature (learned).")
    hard_negatives: float = option(0.0, in_range(0, 100),
                                   help="beta of hard-negative weighting in the InfoNCE loss (Robinson et al. 2021, "
                                        "\"Contrastive learning with hard negative samples\"): each negative's "
                                        "weight is proportional to exp(beta x its cosine similarity), so the "
                                        "negatives that share most with the positive (a caption naming the same "
                                        "colour and place but another shape) count most. 0: plain InfoNCE.")
    negative_queue: int = option(0, count(0, WIDTH),
                                 help="MoCo-style alignment: when > 0, each student row is scored against the EMA "
                                      "teacher's embeddings (keys) of the paired rows, and the last this many keys "
                                      "per modality (of all ranks) are kept as extra negatives of every pair: a "
                                      "small batch's negatives rarely differ from a row in one attribute only, the "
                                      "queue's do. Not saved in checkpoints (a resumed run refills it). 0: rows are "
                                      "scored against each other, negatives from the batch only.")
    cross_weight: float = option(0.0, at_least(0), fixed=lambda weight: weight > 0,
                                 help="Weight of the cross-modal target loss: each modality's pooled student "
                                      "latents (its masked views) predict, through a linear head per direction, the "
                                      "pooled teacher latents (final layer, mean over the slots, layer-normalised) "
                                      "of the same sample's other modalities. A regression per sample: a picture "
                                      "must carry whatever its caption's representation holds that it shows, where "
                                      "InfoNCE asks only for what tells it from the batch's negatives. 0 turns it "
                                      "off and drops its heads (on/off is fixed on resume).")
    min_target_std: float = option(0.1, at_least(0),
                                   help="Collapse guard: stop when the across-sample target std of a modality falls "
                                        "below this after the warm-up (fairseq: 0.1).")
    min_pred_std: float = option(0.01, at_least(0),
                                 help="Collapse guard: the same for the predictions (fairseq: 0.01).")
    collapse_warmup_steps: int = option(5000, count(0, MANY),
                                        help="Steps before the collapse guard judges (fairseq: 5k updates).")
    collapse_min_rows: int = option(8, count(2, MANY),
                                    help="The guard judges a modality only when the log interval gave it at least "
                                         "this many rows over all ranks: the across-sample std of 1 row is 0 and of "
                                         "none undefined, which is no collapse; with >= 8 rows it is far from 0 "
                                         "unless every sample has the same target.")


def alignment_on(objective_cfg: ObjectiveConfig) -> bool:
    """Whether the InfoNCE alignment (its loss and its projection head) is part of the model.

    The one test every place uses (the model's head, its size, FLOPs, the embedding width, the
    exported folder's "projected"), so they cannot disagree."""
    return objective_cfg.align_weight > 0


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay."""

    lr: float = option(5e-4, positive, help="Peak learning rate, reached after optim.warmup_steps.")
    min_lr: float = option(1e-5, at_least(0), help="Learning rate at the end of the cosine decay (at most optim.lr).")
    weight_decay: float = option(0.05, at_least(0), help="AdamW weight decay (not on biases, norm gains and other 1-d parameters).")
    betas: list[float] = option(rule=each(in_range(0, 1, high_open=True), length=2), factory=lambda: [0.9, 0.98],
                                help="AdamW betas.")
    eps: float = option(1e-6, positive, help="AdamW epsilon.")
    warmup_steps: int = option(50, count(0, MANY), help="Linear learning-rate warm-up steps.")
    grad_clip: float = option(1.0, at_least(0), help="Gradient norm clipping; 0: no clipping.")


@dataclass
class TrainConfig:
    """The run: length, batch, output, checkpoints and precision."""

    max_steps: int = option(600, count(1, MANY), help="Optimizer steps of the run.")
    micro_batch_size: int = option(32, count(1, ROWS),
                                   help="Rows per rank per micro-batch (a row is one modality of a sample; "
                                        "train batch = micro x grad_accum x ranks).")
    grad_accum: int = option(1, count(1, ROWS), help="Micro-batches accumulated per optimizer step.")
    seed: int = option(0, in_range(0, 2**32, high_open=True), help="Seed of weights, masks and the data order.")
    output_dir: str = option("runs/joint", not_empty,
                             help="The run directory: resolved config, checkpoints, TensorBoard events, export.")
    resume: str = option("", anything,
                         help="\"\": fresh run; \"auto\": the latest good checkpoint in train.output_dir if any; or "
                              "a checkpoint path.")
    checkpoint_every: int = option(200, count(1, MANY), help="Steps between checkpoints.")
    checkpoint_every_minutes: float = option(
        0.0, in_range(0, 10**6),
        help="Also checkpoint when this many minutes of wall clock passed since the last checkpoint (or the "
             "launch's first step: a resumed run counts from its resume); 0: off. Checked at each train.log_every step, agreed by every rank through that "
             "step's existing all-reduce (no extra host sync), so a save comes at most one log interval late.")
    keep_last: int = option(2, count(1, 10**6), help="Checkpoints kept; older ones are deleted.")
    log_every: int = option(10, count(1, MANY), help="Steps between logged (and rank-reduced) metrics.")
    max_nonfinite_in_row: int = option(5, count(1, MANY),
                                       help="This many skipped non-finite steps in a row save a checkpoint and stop "
                                            "the run (exit 4).")
    precision: str = option("fp32", one_of("fp32", "bf16"), fixed=True,
                            help="\"fp32\" or \"bf16\" (DeepSpeed's bf16: bf16 student weights and activations, fp32 "
                                 "master weights; the EMA teacher and the targets stay fp32; docs/DESIGN.md "
                                 "\"Precision\"). Fixed on resume: DeepSpeed's optimizer state differs.")
    compile: bool = option(False, anything,
                           help="torch.compile the whole student step in place: teacher targets, student, alignment and "
                                "loss, forward and backward, with dynamic batch shapes; the masking runs eagerly "
                                "(same parameter names, so checkpoints are unchanged). Tested under ZeRO 0 and 2. "
                                "Opt-in: compiling takes minutes before the first step.")


@dataclass
class EvalConfig:
    """The periodic retrieval eval on the held-out sources."""

    every: int = option(200, count(0, MANY), help="Steps between retrieval evals; 0: no periodic eval.")
    max_samples: int = option(1000, count(1, 10**9), help="Held-out samples read per eval.")
    model: str = option("teacher", one_of("teacher", "student"), help="Which weights embed the held-out samples.")
    pooling: str = option("mean", one_of("mean"), help="How the final latents become one embedding.")
    max_time_share: float = option(0.2, in_range(0, 1),
                                   help="Eval may take at most this share of wall time; skipped beyond it.")
    label_metrics: str = option("knn+zeroshot", one_of("off", "knn", "knn+zeroshot"),
                                help="Where held-out samples carry labels (a json \"labels\" object): k-NN top-1 per "
                                     "modality and label field (5-fold cross-validated inside the held-out set, k=20, "
                                     "T=0.07) and zero-shot top-1 (class prompts embedded as text; the demo's fields "
                                     "only), logged as val/{m}_{field}_knn_top1 and val/{m}_{field}_zeroshot_top1.")
    min_queries: int = option(20, count(1, 10**9),
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
    ema_gather_numel: int = option(1 << 25, count(1, 1 << 40),
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
