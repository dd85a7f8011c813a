"""Embed your own strings and files with a trained checkpoint and compare them across modalities.

    python -m unimodal_free.eval.query --checkpoint runs/joint \\
        --text "a dog on a green field" --file dog.jpg said.wav [--json sims.json]

Every input goes through the same decoding as a shard sample (``sample_rows``)
and the same pooled embedding as the retrieval eval (``pooled_embedding``), so
a file scores here exactly as it would inside ``python -m unimodal_free.eval``.
Files are told apart by suffix: .jpg/.jpeg/.png/.webp image, .flac/.wav/.ogg
speech, .txt text (one caption per line). Prints the cosine similarity of
every input with every other one; ``--json`` writes it with the inputs.

From Python (open_clip style)::

    embedder = JointEmbedder.load("runs/joint")
    text = embedder.embed_texts(["a dog on a green field"])  # (1, D), L2-normalised
    media = embedder.embed_files(["dog.jpg", "said.wav"])     # (2, D)
    text @ media.T                                            # (1, 2) cosine similarities
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from unimodal_free.batch import collate_elements
from unimodal_free.data.elements import IMAGE_EXTS, SPEECH_EXTS, TEXT_EXTS, DecodeError, decode_captions, sample_rows
from unimodal_free.eval.cli import EvalError, check_checkpoint_arg, device_arg, load_model, resolve_tokenizer
from unimodal_free.eval.report import write_json
from unimodal_free.model import pooled_embedding
from unimodal_free.model.joint import unwrap
from unimodal_free.usage import ArgumentParser

SUFFIX_MODALITY = {**{e: "image" for e in IMAGE_EXTS}, **{e: "speech" for e in SPEECH_EXTS},
                   **{e: "text" for e in TEXT_EXTS}}


@dataclass(frozen=True)
class Item:
    """One thing to embed: a caption, or an image/speech file (its suffix says which)."""

    source: str  # the caption, or the file path
    is_file: bool
    origin: str = ""  # where a caption came from ("captions.txt:3"); "" for --text

    @property
    def label(self) -> str:
        if self.is_file:
            return self.source
        return f"{self.origin} {self.source!r}" if self.origin else repr(self.source)


def modality_of(item: Item) -> str:
    """'text' for a caption; image/speech/text by the file's suffix (refused when unknown)."""
    if not item.is_file:
        return "text"
    suffix = Path(item.source).suffix.lower().lstrip(".")
    if suffix not in SUFFIX_MODALITY:
        raise EvalError(f"{item.source}: unknown suffix {suffix!r} (known: {sorted(SUFFIX_MODALITY)})")
    return SUFFIX_MODALITY[suffix]


def expand_items(items: list[Item]) -> list[Item]:
    """Check every input before any model loads; a .txt file becomes one caption item per non-empty line."""
    out = []
    for item in items:
        modality = modality_of(item)
        if item.is_file and not os.path.isfile(item.source):
            raise EvalError(f"{item.source}: file not found")
        if item.is_file and modality == "text":
            try:
                captions = decode_captions(Path(item.source).read_bytes(), item.source)
            except DecodeError as exc:
                raise EvalError(str(exc)) from None
            if not captions:
                raise EvalError(f"{item.source}: no caption (every line is empty)")
            out.extend(Item(c, is_file=False, origin=f"{item.source}:{i + 1}") for i, c in enumerate(captions))
        elif not item.is_file and not item.source.split():
            raise EvalError("--text: empty caption")
        else:
            out.append(item)
    return out


class JointEmbedder:
    """A checkpoint's teacher (or student) with its config and tokenizer: inputs in, embeddings out."""

    def __init__(self, model: torch.nn.Module, cfg, tokenizer, device: torch.device | str = "cpu",
                 step: int = 0, which: str = "teacher"):
        self.model = model.to(device).eval()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.step, self.which = step, which

    @classmethod
    def load(cls, checkpoint: str, model: Optional[str] = None, tokenizer: Optional[str] = None,
             device: torch.device | str = "cpu") -> "JointEmbedder":
        """``checkpoint``: an exported model file or a run directory (as ``python -m unimodal_free.eval`` takes)."""
        from unimodal_free.train.export import load_weights

        weights = load_weights(checkpoint)
        cfg = weights.cfg
        which = model or cfg.eval.model
        tok = resolve_tokenizer(weights.tokenizer_ref, tokenizer, checkpoint, cfg.data.demo_dir)
        return cls(load_model(weights, which, tok.vocab_size, checkpoint), cfg, tok, device,
                   int(getattr(weights, "step", 0) or 0), which)

    def _row(self, index: int, item: Item):
        """The one decoded row of an image/speech file or a caption, keyed by its position ``index``."""
        if item.is_file:
            ext = Path(item.source).suffix.lower().lstrip(".")
            sample = {"__key__": str(index), ext: Path(item.source).read_bytes()}
        else:
            sample = {"__key__": str(index), "txt": " ".join(item.source.split()).encode("utf-8")}
        try:
            (row,) = sample_rows(sample, self.cfg.data, self.tokenizer, train=False)
        except DecodeError as exc:  # its key is our index: name the input instead
            raise EvalError(f"{item.label}: {exc.reason}") from None
        return row

    @torch.no_grad()
    def embed(self, items: list[Item], batch_size: Optional[int] = None) -> torch.Tensor:
        """(len(items), D) L2-normalised embeddings in input order (items as :func:`expand_items` leaves them)."""
        known = unwrap(self.model).modalities
        for item in items:
            if modality_of(item) not in known:
                raise EvalError(f"{item.label}: this checkpoint was trained without {modality_of(item)} (it has {known})")
        rows = [self._row(i, item) for i, item in enumerate(items)]
        batch_size = batch_size or self.cfg.train.micro_batch_size
        positions, embeddings = [], []
        for start in range(0, len(rows), batch_size):
            batch = collate_elements(rows[start : start + batch_size])  # rows grouped by modality
            pooled = pooled_embedding(self.model, batch.to(self.device), project=True)  # {m: (B_m, D)}
            for m, part in batch.parts.items():
                positions += [int(k) for k in part.keys]
                embeddings.append(pooled[m].cpu())
        z = torch.cat(embeddings)  # (n, D) in batch order
        return z[torch.tensor(positions).argsort()]  # back to input order

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D): one caption each."""
        return self.embed(expand_items([Item(t, is_file=False) for t in texts]))

    def embed_files(self, paths: list[str | os.PathLike]) -> torch.Tensor:
        """(rows, D): one row per image/speech file, one per caption line of a .txt file."""
        return self.embed(expand_items([Item(str(p), is_file=True) for p in paths]))


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
    p.add_argument("--checkpoint", required=True, help="exported model file or run directory")
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
    embedder = JointEmbedder.load(args.checkpoint, args.model, args.tokenizer, args.device)
    z = embedder.embed(items)  # (n, D)
    sims = z @ z.T  # (n, n) cosine: rows are L2-normalised
    modalities = [modality_of(item) for item in items]
    projected = embedder.cfg.objective.align_weight > 0
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
    from unimodal_free.train.checkpoint import CheckpointError

    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
