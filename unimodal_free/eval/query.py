"""Embed your own strings and files with a trained checkpoint and compare them across modalities.

    python -m unimodal_free.eval.query --checkpoint runs/joint \\
        --text "a dog on a green field" --file dog.jpg said.wav [--json sims.json]

Every input goes through the shard decoder's functions (``data/reading/elements.py``)
and the same pooled embedding as the retrieval eval (``pooled_embedding``), so
a file scores here exactly as it would inside ``python -m unimodal_free.eval``.
Files are told apart by suffix: .jpg/.jpeg/.png/.webp image, .flac/.wav/.ogg
speech, .txt text (one caption per line). Prints the cosine similarity of
every input with every other one; ``--json`` writes it with the inputs.

From Python, ``unimodal_free.load`` (``unimodal_free/embedder.py``) returns the
embedder this command uses; it also takes PIL images, image tensors and waveforms.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import torch

from unimodal_free.config import alignment_on
from unimodal_free.embedder import Embedder, Item, modality_of, read_caption_file
from unimodal_free.eval.cli import check_checkpoint_arg, device_arg
from unimodal_free.eval.report import write_json
from unimodal_free.store.checkpoints import CheckpointError
from unimodal_free.store.rebuild import EvalError
from unimodal_free.usage import ArgumentParser, report_usage_error

class JointEmbedder(Embedder):
    """:class:`Embedder` under the name this module gave it first, with its ``load`` arguments in their order."""

    @classmethod
    def load(cls, checkpoint: str, model: Optional[str] = None, tokenizer: Optional[str] = None,
             device: torch.device | str = "cpu") -> "JointEmbedder":
        """``model`` None: the run's ``eval.model``."""
        return super().load(checkpoint, device, model, tokenizer)


def expand_items(items: list[Item]) -> list[Item]:
    """Check every input before any model loads; a .txt file becomes one caption item per non-empty line."""
    out = []
    for item in items:
        modality = modality_of(item)
        if item.is_file and not os.path.isfile(item.source):
            raise EvalError(f"{item.source}: {'not a regular file' if os.path.exists(item.source) else 'file not found'}")
        if item.is_file and modality == "text":
            captions = read_caption_file(item.source, item.source)
            out.extend(Item(c, is_file=False, origin=f"{item.source}:{i + 1}") for i, c in enumerate(captions))
        elif not item.is_file and not item.source.split():
            raise EvalError("--text: empty caption")
        else:
            out.append(item)
    return out


def short_label(item: Item, width: int = 40) -> str:
    """The item's label cut to ``width``: a path keeps its end (the file name), a caption its start."""
    label = item.label
    if len(label) <= width:
        return label
    return "..." + label[-(width - 3):] if item.is_file else label[: width - 3] + "..."


def format_matrix(labels: list[str], modalities: list[str], sims: torch.Tensor) -> str:
    """Aligned cosine matrix; columns are numbered to keep it narrow."""
    names = [f"[{i}] {m:<6} {label}" for i, (m, label) in enumerate(zip(modalities, labels))]
    first = max(len(n) for n in names)
    lines = [" " * first + "".join(f"  {f'[{j}]':>6}" for j in range(len(names)))]
    for name, row in zip(names, sims.tolist()):
        lines.append(f"{name:<{first}}" + "".join(f"  {v:6.3f}" for v in row))
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m unimodal_free.eval.query", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="model folder, run directory, checkpoint directory or model.safetensors")
    p.add_argument("--text", nargs="+", action="extend", default=[], help="captions, one per argument")
    p.add_argument("--file", nargs="+", action="extend", default=[],
                   help="image (.jpg .jpeg .png .webp), speech (.flac .wav .ogg) or text (.txt, a caption per line)")
    p.add_argument("--model", choices=("teacher", "student"), default=None, help="default: eval.model of the run")
    p.add_argument("--tokenizer", default=None, help="default: the tokenizer recorded in the checkpoint")
    p.add_argument("--json", default=None, help="write {inputs, similarity} here")
    p.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if len(args.text) + len(args.file) < 2:
        p.error("give at least two inputs (--text and/or --file) to compare")
    return args


def run(args: argparse.Namespace) -> int:
    items = expand_items([Item(t, is_file=False) for t in args.text] + [Item(f, is_file=True) for f in args.file])
    check_checkpoint_arg(args.checkpoint)  # after the inputs: they are checked before any checkpoint is read
    embedder = Embedder.load(args.checkpoint, args.device, model=args.model, tokenizer=args.tokenizer)
    z = embedder.embed(items)  # (n, D)
    sims = z @ z.T  # (n, n) cosine: rows are L2-normalised
    modalities = [modality_of(item) for item in items]
    projected = alignment_on(embedder.cfg.objective)
    print(f"checkpoint {args.checkpoint} (step {embedder.step}, {embedder.which}, mean pooling"
          f"{', projected' if projected else ''}); cosine similarity")
    print(format_matrix([short_label(item) for item in items], modalities, sims))
    if args.json:
        inputs = [{"modality": m, "source": item.source, "origin": item.origin or ("file" if item.is_file else "text")}
                  for m, item in zip(modalities, items)]
        write_json({"checkpoint": os.path.abspath(args.checkpoint), "step": embedder.step, "model": embedder.which,
                    "inputs": inputs, "similarity": sims.tolist()}, args.json)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:  # one line, no traceback
        return report_usage_error(exc)


if __name__ == "__main__":
    sys.exit(main())
