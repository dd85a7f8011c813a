"""Cross-modal retrieval of a trained checkpoint on paired shards.

    python -m unimodal_free.eval --checkpoint runs/joint --data shards/heldout \\
        [--model teacher|student] [--json results.json] [--clip-benchmark-json cb.json] \\
        [--logdir runs/joint/tb] [--min-queries N]

``--checkpoint`` is an exported ``model.safetensors``, a run directory (the
``model.safetensors`` inside its latest complete checkpoint, any ZeRO stage,
else its final export) or one checkpoint directory; only safetensors are read,
never a pickle, so a run directory from anyone is safe to evaluate. The model is rebuilt from the config
stored with the weights; the tokenizer must be the one it was trained with.
Prints an aligned table (recalls in percent, chance level in parentheses);
``--json`` writes one file: open_clip-style flat keys (``image_to_text_R@1``
as a fraction, ``..._mean_rank``, ``..._median_rank``, plus ``..._num_queries``,
``..._num_candidates``, ``..._chance_R@k``, ``..._too_small``) for every
direction present, and a ``metadata`` object saying what was evaluated, with
which code. ``--clip-benchmark-json`` writes CLIP_benchmark's result format
(image <-> text). ``--logdir`` writes TensorBoard events into its own
sub-folder ``<logdir>/eval-step<step>-<model>``, so a training run's ``tb/``
can be given without touching its own events or projector. Each direction is
scored on the samples that have both of its modalities; one with fewer than
``--min-queries`` queries (default ``eval.min_queries`` of the run, 20) is
flagged too small to read (``..._too_small: true`` in the JSON, a note in the
table).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError, safe_open

from unimodal_free.config import Source, alignment_on
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.eval.evaluate import evaluate
from unimodal_free.eval.label_report import format_heldout_labels
from unimodal_free.eval.report import clip_benchmark_result, format_table, results_json, write_json
from unimodal_free.provenance import provenance
from unimodal_free.store.checkpoints import CheckpointError
from unimodal_free.store.rebuild import EvalError, load_model, resolve_tokenizer
from unimodal_free.store.weights import load_weights
from unimodal_free.usage import ArgumentParser, report_usage_error


def device_arg(text: str) -> str:
    """argparse type of ``--device``: a torch device this machine has."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available here")
    return text


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m unimodal_free.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="model folder, run directory, checkpoint directory or model.safetensors")
    p.add_argument("--data", required=True, nargs="+", help="paired shards: directory, glob, brace pattern or URL")
    p.add_argument("--model", choices=("teacher", "student"), default=None, help="default: eval.model of the run")
    p.add_argument("--pooling", choices=("mean",), default=None, help="default: eval.pooling of the run")
    p.add_argument("--tokenizer", default=None,
                   help="'bytes', 'demo' or a sentencepiece .model (default: the path recorded in the checkpoint)")
    p.add_argument("--json", default=None, help="write the metrics (flat open_clip-style keys) and metadata here")
    p.add_argument("--clip-benchmark-json", default=None, metavar="PATH",
                   help="also write CLIP_benchmark's zero-shot retrieval result file (image <-> text recall@k)")
    p.add_argument("--language", default="en", help="'language' field of the CLIP_benchmark file (default: en)")
    p.add_argument("--logdir", default=None,
                   help="TensorBoard: scalars, similarity figures and projector, in <logdir>/eval-step<step>-<model>")
    p.add_argument("--batch-size", type=int, default=None, help="samples per batch (default: train.micro_batch_size)")
    p.add_argument("--max-samples", type=int, default=None, help="first N samples of the shards (default: all)")
    p.add_argument("--min-queries", type=int, default=None,
                   help="flag directions with fewer queries as too small to read (default: eval.min_queries of the run)")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    for flag in ("batch_size", "max_samples", "min_queries"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            p.error(f"--{flag.replace('_', '-')}: must be > 0, got {value}")
    return args


def check_checkpoint_arg(path: str, flag: str = "--checkpoint") -> None:
    """``flag`` names an export safetensors can open, or a folder (run or checkpoint dir); else EvalError.

    Only the header is read here; a pickle, a truncated file or a device gets one line, not a traceback.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return
    if not p.exists():
        raise EvalError(f"{flag} {path}: no such export file or run directory")
    if not p.is_file():
        raise EvalError(f"{flag} {path}: not a regular file")
    try:
        with safe_open(str(p), framework="pt") as f:
            f.metadata()
    except (SafetensorError, OSError) as exc:
        raise EvalError(f"{flag} {path}: not a safetensors export ({exc})") from None


def run(args: argparse.Namespace) -> int:
    weights = load_weights(args.checkpoint)
    cfg = weights.cfg
    cfg.eval.model = args.model or cfg.eval.model
    cfg.eval.pooling = args.pooling or cfg.eval.pooling
    cfg.eval.min_queries = args.min_queries or cfg.eval.min_queries
    tokenizer = resolve_tokenizer(weights.tokenizer_ref, args.tokenizer, args.checkpoint, cfg.data.demo_dir)
    sources = [Source(path=p) for p in args.data]
    for src in sources:
        expand_shards(src)  # a typo fails here, naming the source
    device = torch.device(args.device)
    model = load_model(weights, cfg.eval.model, tokenizer.vocab_size, args.checkpoint).to(device)

    step = int(getattr(weights, "step", 0) or 0)
    writer = None
    if args.logdir:
        from torch.utils.tensorboard import SummaryWriter  # only with --logdir: TensorBoard is heavy to import

        writer = SummaryWriter(eval_logdir(args.logdir, step, cfg.eval.model))
    loader = make_eval_loader(cfg.data, sources, tokenizer, args.batch_size or cfg.train.micro_batch_size)
    out = evaluate(model, loader, cfg.eval, cfg.data, tokenizer, device, args.max_samples, cfg.eval.model,
                   writer=writer, step=step, prefix="eval")
    emb = out.embeddings
    if not out.results:
        raise EvalError(
            f"--data {' '.join(args.data)}: no modality pair is shared by two or more samples "
            f"({len(emb.pair_names)} samples, rows {({m: emb.rows(m) for m in emb.modalities})}): nothing to retrieve"
        )
    meta = {
        "checkpoint": os.path.abspath(args.checkpoint),
        "source": getattr(weights, "source", "") or os.path.abspath(args.checkpoint),  # the file/tag actually read
        "step": step,
        "model": cfg.eval.model,
        "pooling": cfg.eval.pooling,
        "projected": alignment_on(cfg.objective),
        "tokenizer": tokenizer.reference,
        "data": list(args.data),
        "samples": len(emb.pair_names),
        "min_queries": cfg.eval.min_queries,
        "rows": {m: emb.rows(m) for m in emb.modalities},
        "skipped_samples": out.skipped,
        "seconds": round(out.seconds, 2),
        # eval.label_metrics on labelled shards: k-NN (5-fold inside --data) and zero-shot top-1
        "label_metrics": {k: round(v, 4) for k, v in out.labels.items()},
        "ties": "pessimistic: a wrong candidate scoring >= the best correct one ranks ahead of it",
        "package": "unimodal_free",
        **provenance(),  # version, git_commit, git_dirty, date
    }
    print(
        f"checkpoint {meta['source']} (step {step}, {meta['model']}, {meta['pooling']} pooling"
        f"{', projected' if meta['projected'] else ''}); {meta['samples']} samples, "
        f"rows {meta['rows']}, {out.skipped} skipped, {meta['seconds']} s"
    )
    print(format_table(out.results))
    if out.labels:
        print("\nheld-out labels, top-1 % (k-NN: 5-fold inside --data; the full protocol: eval probe, eval zeroshot)")
        print(format_heldout_labels(out.labels))
    if writer is not None:
        for key, value in out.items():
            writer.add_scalar(f"eval/{key}", value, step)
        writer.close()
        print(f"TensorBoard events: {writer.log_dir}")
    if args.json:
        write_json(results_json(out.results, meta), args.json)
    if args.clip_benchmark_json:
        try:
            result = clip_benchmark_result(out.results, dataset=",".join(args.data), model=f"unimodal_free-{meta['model']}",
                                           pretrained=meta["source"], language=args.language)
        except ValueError as exc:
            raise EvalError(f"--clip-benchmark-json {args.clip_benchmark_json}: {exc}") from None
        write_json(result, args.clip_benchmark_json)
    return 0


def eval_logdir(logdir: str, step: int, which: str) -> str:
    """``<logdir>/eval-step<step>-<model>``: a run of its own, so an eval pointed at a training run's
    ``tb/`` neither mixes its events into the training curves nor overwrites its projector config."""
    return os.path.join(logdir, f"eval-step{step:08d}-{which}")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        check_checkpoint_arg(args.checkpoint)
        return run(args)
    # EvalError, ConfigError, TokenizerMismatchError, bad shards, unusable checkpoints: one line, no traceback.
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        return report_usage_error(exc)


if __name__ == "__main__":
    sys.exit(main())
