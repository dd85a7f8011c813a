"""Can the image path learn a picture's label at all? Train it supervised and watch the accuracy.

Separates what the front end can represent from what the self-supervised
objective asks of it: each arm trains the image path of a freshly built model
with cross-entropy on one label of the labelled pictures (the demo's ``shape``
by default; a linear head over the classes), and reports train and held-out
top-1 every ``--eval-every`` steps.

    perceiver          the plain Perceiver (``model.element_summary=none``): pooled mean of the final
                       latents -> linear head
    perceiver+summary  the same with ``model.element_summary=max`` (every latent also gets a max over
                       the elements of a per-element MLP)
    bag                no Perceiver: the element embedding, a per-element MLP and a max over the
                       elements (``model.summary.ElementSummary``) -> linear head

Models come from the project's ``build_model`` on the base config plus the arm's
overrides (and the experiment-wide ``--set``), so ``--set model.num_latents=64``
changes every Perceiver arm. Every arm starts from the same seed and sees the
same batches; AdamW as training builds it (``optim``'s betas, eps and decay
split) at a constant learning rate, no warmup. The labelled rows are read once
through the eval loader (the base config's train and held-out sources; the
demo's, generated if missing, when none are configured) and kept in memory.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from unimodal_free.batch import Elements, Row, Rows, collate_elements, modality_specs
from unimodal_free.config import load_config
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.loading.sources import resolve_sources
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.experiments.results import markdown, pct, seconds
from unimodal_free.experiments.runner import ExperimentError
from unimodal_free.model import build_model
from unimodal_free.model.summary import ElementSummary
from unimodal_free.train.optim import build_optimizer

ABOUT = "image path trained supervised on one picture label (shape): Perceiver, + element summary, bag of elements"

MODALITY = "image"
EVAL_CHUNK = 256  # rows per forward pass when scoring a split
TRAIN_SCORED = 512  # training pictures the train accuracy is measured on (a fixed draw: scoring all is slow)


@dataclass(frozen=True)
class FrontEnd:
    """One arm: a name, config overrides, and how the image's elements become one vector."""

    name: str
    overrides: tuple[str, ...] = ()
    pool: str = "latents"  # "latents": mean of the Perceiver's final latents; "elements": bag of the elements


ARMS = [
    FrontEnd("perceiver", ("model.element_summary=none",)),
    FrontEnd("perceiver+summary", ("model.element_summary=max",)),
    FrontEnd("bag", pool="elements"),
]
ARM_TITLES = [arm.name for arm in ARMS]  # for --help
# Not the trainer's steps: its own supervised ones, in this process (measured with the defaults, README Findings).
COST = ("3 supervised trainings in this process, 300 steps of 64 pictures each (--steps, --batch): about 34 min "
        "(measured: 818 s, 895 s and 196 s of training)")


@dataclass(frozen=True)
class Settings:
    """The experiment's own options (``add_options``)."""

    label: str = "shape"  # the label field the pictures are classified by
    steps: int = 300
    lr: Optional[float] = None  # None: the config's optim.lr
    batch: int = 64
    eval_every: int = 100
    seed: int = 0
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)
    arms: tuple[str, ...] = tuple(a.name for a in ARMS)


def add_options(group) -> None:
    d = Settings()
    group.add_argument("--label", default=d.label, help=f"label field to classify (default {d.label})")
    group.add_argument("--steps", type=positive, default=d.steps, help=f"training steps per arm (default {d.steps})")
    group.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: the config's optim.lr)")
    group.add_argument("--batch", type=positive, default=d.batch, help=f"pictures per step (default {d.batch})")
    group.add_argument("--eval-every", type=positive, default=d.eval_every,
                       help=f"steps between accuracy evaluations (default {d.eval_every}; the last step always)")
    group.add_argument("--seed", type=int, default=d.seed, help=f"model init and batch draws (default {d.seed})")
    group.add_argument("--threads", type=positive, default=d.threads, help="torch CPU threads (default: torch's)")
    group.add_argument("--arms", nargs="+", choices=d.arms, default=d.arms, help="arms to run (default: all)")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


@dataclass
class Labelled:
    """One split's labelled pictures, unpadded, kept in memory; ``targets`` index ``classes``."""

    rows: list[Row]
    targets: torch.Tensor  # (n,) int64

    def subset(self, index: torch.Tensor) -> "Labelled":
        return Labelled([self.rows[i] for i in index.tolist()], self.targets[index])

    def batch(self, index: torch.Tensor) -> Rows:
        """The rows at ``index``, padded together by the project's collate."""
        return collate_elements([self.rows[i] for i in index.tolist()]).parts[MODALITY]


def read_labelled(cfg, sources, tokenizer, label: str) -> tuple[list[Row], list[str]]:
    """Every image row of ``sources`` with its ``label`` value (rows without that label are left out)."""
    rows, values = [], []
    for batch in make_eval_loader(cfg.data, sources, tokenizer, cfg.train.micro_batch_size):
        part = batch.parts.get(MODALITY)
        if part is None:
            continue
        for i, labels in enumerate(part.labels):
            if label not in labels:
                continue
            real = ~part.padding[i]  # (M,) the row's own elements
            rows.append(Row(Elements(MODALITY, part.values[i][real], part.coords[i][real]), part.keys[i], None))
            values.append(labels[label])
    return rows, values


def load_splits(cfg, sources, tokenizer, label: str) -> tuple[Labelled, Labelled, list[str]]:
    """(train, held-out, classes) of the config's sources, classes sorted over both splits."""
    train, heldout = (read_labelled(cfg, s, tokenizer, label) for s in (sources.train, sources.heldout))
    for (rows, _), split, s in ((train, "train", sources.train), (heldout, "held-out", sources.heldout)):
        if not rows:
            raise ExperimentError(f"front_end: no {split} picture has a {label!r} label "
                                  f"(sources {[src.path for src in s]}; --label picks the field)")
    classes = sorted(set(train[1]) | set(heldout[1]))

    def labelled(rows: list[Row], values: list[str]) -> Labelled:
        return Labelled(rows, torch.tensor([classes.index(v) for v in values]))

    return labelled(*train), labelled(*heldout), classes


class ImageClassifier(nn.Module):
    """The image path of a joint model, pooled to one vector per picture, then a linear head."""

    def __init__(self, model: nn.Module, d_model: int, num_classes: int, pool: str):
        super().__init__()
        self.model = model
        self.bag = ElementSummary(d_model) if pool == "elements" else None
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, rows: Rows) -> torch.Tensor:
        """rows of B pictures -> (B, classes) logits."""
        if self.bag is not None:
            x = self.model.embed(MODALITY, rows.values, rows.coords, rows.padding)  # (B, M, D)
            return self.head(self.bag(x, rows.padding))  # (B, D) -> (B, C)
        latents = self.model.final({MODALITY: rows})  # (B, N, D)
        return self.head(latents.mean(1))  # (B, D) -> (B, C)

    def trained_parameters(self) -> nn.ModuleList:
        """What the arm trains: the bag arm never runs the encoder, so its parameters stay out."""
        used = [self.model.embed, self.bag] if self.bag is not None else [self.model.embed, self.model.encoder,
                                                                           self.model.norm]
        return nn.ModuleList([*used, self.head])


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1: share of rows whose highest logit is their target. logits (n, C), targets (n,)."""
    return (logits.argmax(1) == targets).float().mean().item()


@torch.no_grad()
def split_accuracy(net: ImageClassifier, split: Labelled) -> float:
    net.eval()
    logits = torch.cat([net(split.batch(i)) for i in torch.arange(len(split.rows)).split(EVAL_CHUNK)])  # (n, C)
    net.train()
    return accuracy(logits, split.targets)


def train_arm(arm: FrontEnd, cfg, specs, train: Labelled, heldout: Labelled, num_classes: int,
              s: Settings, log) -> dict:
    """Train one arm from seed ``s.seed``; its accuracy curve, last loss and wall time."""
    torch.manual_seed(s.seed)
    net = ImageClassifier(build_model(cfg.model, cfg.objective, specs), cfg.model.d_model, num_classes, arm.pool)
    optim_cfg = replace(cfg.optim, lr=s.lr if s.lr is not None else cfg.optim.lr)
    optimizer = build_optimizer(net.trained_parameters(), optim_cfg, check_finite=False)
    draws = torch.Generator().manual_seed(s.seed)  # the same batches (and scored pictures) for every arm
    scored = train.subset(torch.randperm(len(train.rows), generator=draws)[:TRAIN_SCORED])
    curve, start = [], time.monotonic()
    for step in range(1, s.steps + 1):
        index = torch.randint(0, len(train.rows), (s.batch,), generator=draws)  # (batch,)
        loss = F.cross_entropy(net(train.batch(index)), train.targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % s.eval_every == 0 or step == s.steps:
            point = {"step": step, "loss": loss.item(), "train": split_accuracy(net, scored),
                     "heldout": split_accuracy(net, heldout), "seconds": time.monotonic() - start}
            curve.append(point)
            log(f"{arm.name}: step {step} loss {point['loss']:.3f} train {pct(point['train'])}% "
                f"held-out {pct(point['heldout'])}% ({point['seconds']:.0f} s)")
    return {"overrides": list(arm.overrides), "pool": arm.pool, "curve": curve,
            "seconds": time.monotonic() - start}


def table(done: dict[str, dict]) -> str:
    """One row per arm; train / held-out top-1 (%) at each evaluated step; seconds per arm."""
    steps = [p["step"] for p in next(iter(done.values()))["curve"]]
    header = ["arm", *[f"step {n} train / held-out" for n in steps], "s"]
    rows = [[name, *[f"{pct(p['train'])} / {pct(p['heldout'])}" for p in arm["curve"]], seconds(arm["seconds"])]
            for name, arm in done.items()]
    return markdown(header, rows)


def run(ctx) -> str:
    s = Settings(**{f.name: ctx.options[f.name] for f in fields(Settings) if f.name in ctx.options})
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    base = load_config(ctx.config, list(ctx.common))
    sources = resolve_sources(base.data)
    tokenizer = load_tokenizer(sources.tokenizer_spec(base.data))
    train, heldout, classes = load_splits(base, sources, tokenizer, s.label)
    ctx.log(f"front_end: {len(train.rows)} train / {len(heldout.rows)} held-out pictures, "
            f"{s.label}: {len(classes)} classes")
    done = {}
    for arm in (a for a in ARMS if a.name in s.arms):
        cfg = load_config(ctx.config, [*ctx.common, *arm.overrides])  # arms change the model only
        specs = modality_specs(base.data, tokenizer.vocab_size)
        done[arm.name] = train_arm(arm, cfg, specs, train, heldout, len(classes), s, ctx.log)
    lr = s.lr if s.lr is not None else base.optim.lr
    notes = (f"Supervised top-1 (%) on `{s.label}` ({len(classes)} classes, chance {100 / len(classes):.1f}); "
             f"{len(train.rows)} training / {len(heldout.rows)} held-out pictures (train accuracy on "
             f"{min(TRAIN_SCORED, len(train.rows))} of them); batch {s.batch}, lr {lr:g}, "
             f"seed {s.seed}, torch threads {torch.get_num_threads()}; base config {ctx.config}, "
             f"overrides {list(ctx.common) or 'none'}. s: wall seconds per arm, evaluations included.\n")
    ctx.root.mkdir(parents=True, exist_ok=True)
    (ctx.root / "front_end.json").write_text(json.dumps(
        {"settings": {**asdict(s), "lr": lr}, "classes": classes, "config": ctx.config,
         "overrides": list(ctx.common), "train_pictures": len(train.rows), "heldout_pictures": len(heldout.rows),
         "arms": done}, indent=1))
    return table(done) + "\n" + notes
