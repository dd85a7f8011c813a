"""What the search command and the explorer share: their model and gallery flags, and the embedded gallery."""

from __future__ import annotations

import argparse

import torch

from unimodal_free.embedder import Embedder
from unimodal_free.eval.cli import check_checkpoint_arg, device_arg
from unimodal_free.search.cache import Refresh, gallery_embeddings
from unimodal_free.search.gallery import Gallery
from unimodal_free.usage import UsageError


def add_model_gallery_args(p: argparse.ArgumentParser) -> None:
    """--model, --gallery, --which, --tokenizer, --batch-size, --device."""
    p.add_argument("--model", required=True, help="model folder, run directory, checkpoint directory or model.safetensors")
    p.add_argument("--gallery", required=True, help="a folder of tar shards, one shard, or a folder of files")
    p.add_argument("--which", choices=("teacher", "student"), default=None, help="default: eval.model of the run")
    p.add_argument("--tokenizer", default=None, help="default: the tokenizer recorded with the model")
    p.add_argument("--batch-size", type=int, default=None, help="rows per forward pass (default: train.micro_batch_size)")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *flags: str) -> None:
    """A usage error (``--flag: must be > 0, got N``) for each of ``flags`` given as 0 or less."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value <= 0:
            p.error(f"--{flag.replace('_', '-')}: must be > 0, got {value}")


def load_model(args: argparse.Namespace) -> Embedder:
    check_checkpoint_arg(args.model, "--model")
    return Embedder.load(args.model, args.device, model=args.which, tokenizer=args.tokenizer)


def embedded_gallery(gallery: Gallery, embedder: Embedder, args: argparse.Namespace) -> tuple[Refresh, str]:
    """The gallery's embeddings (from its cache where it can) and the status line; a gallery with no readable item
    is a usage error."""
    done, status, counter = gallery_embeddings(gallery, embedder, args.batch_size or embedder.cfg.train.micro_batch_size)
    if not done.cached.items:
        raise UsageError(f"--gallery {args.gallery}: no item could be read ({counter.reasons_line()})")
    return done, status
