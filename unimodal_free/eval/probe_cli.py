"""What a checkpoint's frozen features know about the labels of its data: linear probe, k-NN, zero-shot.

    python -m unimodal_free.eval probe --checkpoint RUN --train SHARDS --heldout SHARDS \\
        [--model teacher|student] [--features head|pooled|block:N|latents] [--k K] [--no-random-init] \\
        [--json OUT] [--clip-benchmark-json OUT]
    python -m unimodal_free.eval zeroshot --checkpoint RUN --data SHARDS [--classes FILE] \\
        [--model ...] [--features ...] [--no-random-init] [--json OUT] [--clip-benchmark-json OUT]

``probe`` fits a logistic-regression probe (C chosen on a validation part of the train split, CLIP's
protocol) and a k-NN classifier (DINO's: k = 20, exp(sim / 0.07) votes) per modality and label field on
the frozen features of ``--train`` and scores them on ``--heldout`` (eval/probe.py). ``zeroshot``
classifies the images and recordings of ``--data`` by their nearest class-name text embedding
(CLIP_benchmark's prompt ensembling, eval/zeroshot.py). Both print one table line per (modality,
field, classifier) with the same metrics of a randomly initialised model of the same config (seed
``RANDOM_INIT_SEED``) in parentheses: the floor that architecture and input statistics give without
training. ``--json`` writes the nested results with metadata; ``--clip-benchmark-json`` a list of
CLIP_benchmark result objects (``linear_probe`` / ``zeroshot_classification``), one per model,
modality and field. Labels are each sample's json ``"labels"`` object.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, NamedTuple, Optional

import torch

from unimodal_free.batch import modality_specs
from unimodal_free.config import Source
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.embedder import Embedder
from unimodal_free.eval.cli import check_checkpoint_arg, device_arg
from unimodal_free.eval.embed import EmbeddingSet, embed_batches
from unimodal_free.eval.features import CHOICES, parse_features
from unimodal_free.eval.label_report import clip_benchmark_records, format_label_table, side_by_side
from unimodal_free.eval.probe import KNN_K, probe_embeddings
from unimodal_free.eval.report import write_json
from unimodal_free.eval.zeroshot import fitting_demo_specs, load_class_specs, zeroshot_embeddings
from unimodal_free.model import build_model
from unimodal_free.provenance import provenance
from unimodal_free.store.checkpoints import CheckpointError
from unimodal_free.store.rebuild import EvalError, load_model, resolve_tokenizer
from unimodal_free.store.weights import load_weights
from unimodal_free.usage import ArgumentParser, report_usage_error

RANDOM_INIT_SEED = 0  # the floor is the same model every time


def common_parser(command: str, summary: str, clip_benchmark: bool = True) -> ArgumentParser:
    p = ArgumentParser(prog=f"python -m unimodal_free.eval {command}", description=summary)
    p.add_argument("--checkpoint", required=True,
                   help="model folder, run directory, checkpoint directory or model.safetensors")
    p.add_argument("--model", choices=("teacher", "student"), default=None, help="default: eval.model of the run")
    p.add_argument("--features", default="head",
                   help=f"{CHOICES}: the alignment head's projection (default), the pooled final latents, "
                        "the mean of latent block N's output (0-based), or the final latent array unpooled "
                        "(its slots concatenated)")
    p.add_argument("--random-init", action=argparse.BooleanOptionalAction, default=True,
                   help=f"also score a randomly initialised model of the same config (seed {RANDOM_INIT_SEED}) "
                        "beside it (default: on)")
    p.add_argument("--tokenizer", default=None, help="default: the tokenizer recorded in the checkpoint")
    p.add_argument("--json", default=None, help="write the nested results and metadata here")
    if clip_benchmark:
        p.add_argument("--clip-benchmark-json", default=None, metavar="PATH",
                       help="also write a list of CLIP_benchmark result objects here")
        p.add_argument("--language", default="en", help="'language' field of the CLIP_benchmark objects (default: en)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default: train.micro_batch_size)")
    p.add_argument("--max-samples", type=int, default=None, help="first N samples of each split (default: all)")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def check_positive(p: ArgumentParser, args: argparse.Namespace, flags: tuple[str, ...]) -> None:
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value <= 0:
            p.error(f"--{flag.replace('_', '-')}: must be > 0, got {value}")


def parse_probe_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = common_parser("probe", "Linear probe and k-NN on frozen features, per modality and label field.")
    p.add_argument("--train", required=True, nargs="+", help="labelled shards the classifiers are fitted on")
    p.add_argument("--heldout", required=True, nargs="+", help="labelled shards they are scored on")
    p.add_argument("--k", type=int, default=None, help="few-shot: k train examples per class (seeded; default: all)")
    p.add_argument("--knn-k", type=int, default=KNN_K, help=f"neighbours that vote (default {KNN_K})")
    p.add_argument("--seed", type=int, default=0, help="few-shot draw and validation split (default 0)")
    args = p.parse_args(argv)
    check_positive(p, args, ("batch_size", "max_samples", "k", "knn_k"))
    return args


def parse_zeroshot_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = common_parser("zeroshot", "Zero-shot classification of images and recordings by class-name prompts.")
    p.add_argument("--data", required=True, nargs="+", help="labelled shards to classify")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help='JSON {"field", "classnames", "templates"} (or a list of them); '
                        "default: the demo's fields (shape, colour, size, position)")
    args = p.parse_args(argv)
    check_positive(p, args, ("batch_size", "max_samples"))
    return args


class Setup:
    """The checkpoint's config, tokenizer and feature choice, and the models to score (trained, random init)."""

    def __init__(self, args: argparse.Namespace):
        check_checkpoint_arg(args.checkpoint)
        weights = load_weights(args.checkpoint)
        self.cfg = weights.cfg
        self.which = args.model or self.cfg.eval.model
        self.tokenizer = resolve_tokenizer(weights.tokenizer_ref, args.tokenizer, args.checkpoint, self.cfg.data.demo_dir)
        self.embed_fn = parse_features(args.features, self.cfg.model.num_blocks)
        self.device = torch.device(args.device)
        self.step = int(getattr(weights, "step", 0) or 0)
        self.source = getattr(weights, "source", "") or os.path.abspath(args.checkpoint)
        vocab = self.tokenizer.vocab_size
        self.models = {"trained": load_model(weights, self.which, vocab, args.checkpoint)}
        if args.random_init:
            self.models["random_init"] = random_init_model(self.cfg, vocab)
        self.batch_size = args.batch_size or self.cfg.train.micro_batch_size
        self.args = args
        self.skipped: dict[str, int] = {}  # flag -> undecodable samples of its shards

    def embed(self, model: torch.nn.Module, paths: list[str], flag: str) -> EmbeddingSet:
        """Every row of the shards ``paths`` embedded with ``model``, with its labels; EvalError if none has labels."""
        sources = [Source(path=p) for p in paths]
        for src in sources:
            expand_shards(src)  # a typo fails here, naming the source
        loader = make_eval_loader(self.cfg.data, sources, self.tokenizer, self.batch_size)
        emb = embed_batches(model.to(self.device).eval(), loader, self.embed_fn, self.device, self.cfg.data,
                            self.args.max_samples, max_thumbnails=0)
        self.skipped[flag] = loader.skipped
        if not any(lab for rows in emb.labels.values() for lab in rows):
            raise EvalError(f"{flag} {' '.join(paths)}: no sample carries labels (a json \"labels\" object)")
        return emb

    def embedder(self, model: torch.nn.Module) -> Embedder:
        """Prompts embedded by ``model`` through the same features as the rows."""
        return Embedder(model, self.cfg, self.tokenizer, self.device, embed_fn=self.embed_fn)

    def metadata(self, data: dict[str, Any], seconds: float) -> dict[str, Any]:
        return {
            "checkpoint": os.path.abspath(self.args.checkpoint), "source": self.source, "step": self.step,
            "model": self.which, "features": self.args.features, "tokenizer": self.tokenizer.reference,
            **data, "random_init_seed": RANDOM_INIT_SEED if "random_init" in self.models else None,
            "seconds": round(seconds, 2), "package": "unimodal_free", **provenance(),
        }

    def clip_benchmark_models(self) -> dict[str, tuple[str, str]]:
        arch = f"unimodal_free-{self.which}-{self.args.features}"
        return {"trained": (arch, self.source), "random_init": (arch, f"random-init-seed{RANDOM_INIT_SEED}")}

    def write(self, nested: dict[str, Any], meta: dict[str, Any], data: str, extra: Optional[dict] = None) -> None:
        print(f"checkpoint {self.source} (step {self.step}, {self.which}, features {self.args.features}); "
              f"{meta['seconds']} s")
        print(format_label_table(nested))
        if self.args.json:
            write_json({"results": nested, "metadata": meta}, self.args.json)
        if self.args.clip_benchmark_json:
            records = clip_benchmark_records(nested, data, self.clip_benchmark_models(), self.args.language, extra)
            write_json(records, self.args.clip_benchmark_json)


def random_init_model(cfg, vocab_size: int) -> torch.nn.Module:
    """A freshly initialised model of ``cfg``, the same one every time (seed RANDOM_INIT_SEED; global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build_model(cfg.model, cfg.objective, modality_specs(cfg.data, vocab_size)).eval()


def split_summary(emb: EmbeddingSet, skipped: int) -> dict[str, Any]:
    return {"rows": {m: emb.rows(m) for m in emb.modalities}, "samples": len(emb.pair_names),
            "skipped_samples": skipped}


class ProbeRun(NamedTuple):
    nested: dict[str, Any]  # {modality: {field: {classifier: {model: metrics}}}}
    data: dict[str, Any]  # what was probed, how: the metadata's data part
    heldout: dict[str, EmbeddingSet]  # model name -> its held-out embeddings


def probe_models(s: Setup, train_paths: list[str], heldout_paths: list[str], fewshot_k: Optional[int] = None,
                 seed: int = 0, knn_k: int = KNN_K, modalities: Optional[list[str]] = None) -> ProbeRun:
    """The probes of every model of ``s`` (trained, random init) fitted on ``train_paths``, scored on
    ``heldout_paths``; EvalError when no (modality, field) is labelled in both."""
    per_model, summary, heldout_sets = {}, {}, {}
    for name, model in s.models.items():
        train = s.embed(model, train_paths, "--train")
        heldout = s.embed(model, heldout_paths, "--heldout")
        per_model[name] = probe_embeddings(train, heldout, fewshot_k, seed, knn_k, modalities)
        summary = {"train": split_summary(train, s.skipped["--train"]),
                   "heldout": split_summary(heldout, s.skipped["--heldout"])}
        heldout_sets[name] = heldout
    nested = side_by_side(per_model)
    if not nested:
        raise EvalError("--train/--heldout: no (modality, label field) is labelled in both splits")
    protocol = {"logistic": "sklearn LogisticRegression (L-BFGS), C from a validation sweep, refit on all of --train",
                "knn": f"cosine, k={knn_k}, votes exp(sim/0.07) (DINO eval_knn)"}
    data = {"train": list(train_paths), "heldout": list(heldout_paths), "splits": summary, "fewshot_k": fewshot_k,
            "seed": seed, "protocol": protocol}
    return ProbeRun(nested, data, heldout_sets)


def run_probe(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    s = Setup(args)
    nested, data, _ = probe_models(s, args.train, args.heldout, args.k, args.seed, args.knn_k)
    s.write(nested, s.metadata(data, time.perf_counter() - start), ",".join(args.heldout),
            {"seed": args.seed, "fewshot_k": -1 if args.k is None else args.k})
    return 0


def run_zeroshot(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    s = Setup(args)
    specs = load_class_specs(args.classes) if args.classes else None
    per_model, summary = {}, {}
    for name, model in s.models.items():
        emb = s.embed(model, args.data, "--data")
        chosen = fitting_demo_specs(emb) if specs is None else specs
        if not chosen:
            fields = sorted({f for rows in emb.labels.values() for lab in rows for f in lab})
            raise EvalError(f"--data: no built-in class names fit its label fields {fields}: pass --classes FILE")
        per_model[name] = {m: {f: {"zeroshot": r} for f, r in fields.items()}
                           for m, fields in zeroshot_embeddings(emb, chosen, s.embedder(model).embed_texts).items()}
        summary = split_summary(emb, s.skipped["--data"])
    nested = side_by_side(per_model)
    if not nested:
        wanted = ", ".join(spec.field for spec in chosen)
        raise EvalError(f"--data {' '.join(args.data)}: no image or speech row carries a label field of the classes "
                        f"({wanted})")
    classes = {spec.field: {"classnames": dict(zip(spec.classnames, spec.words)) if spec.words else list(spec.classnames),
                            "templates": list(spec.templates)} for spec in chosen}
    data = {"data": list(args.data), "split": summary, "classes_file": args.classes, "classes": classes}
    s.write(nested, s.metadata(data, time.perf_counter() - start), ",".join(args.data))
    return 0


COMMANDS = {"probe": (parse_probe_args, run_probe), "zeroshot": (parse_zeroshot_args, run_zeroshot)}


def main(command: str, argv: Optional[list[str]] = None) -> int:
    return run_command(*COMMANDS[command], argv)


def run_command(parse, run, argv: Optional[list[str]] = None) -> int:
    """``run(parse(argv))``, a bad input reported as one ``error:`` line with exit code 2."""
    args = parse(argv)
    try:
        return run(args)
    # EvalError, ConfigError, TokenizerMismatchError, bad shards or class files, unusable checkpoints: one line.
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        return report_usage_error(exc)
