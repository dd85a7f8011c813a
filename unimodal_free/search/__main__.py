"""Rank a gallery of pictures, recordings and captions against one query with a trained model.

    python -m unimodal_free.search --model runs/joint/model --gallery shards/heldout \\
        (--text "a red circle" | --image q.png | --speech q.flac) \\
        [--modality image|speech|text ...] [--top-k 10] [--html sheet.html]

``--model``: a model folder, run directory, checkpoint directory or ``model.safetensors`` (what
``unimodal_free.load`` takes; safetensors only). ``--gallery``: a folder of tar shards or one shard
(each picture, recording and caption line of a sample is an item; several of one sample share its
key), else a folder of .jpg/.jpeg/.png/.webp, .flac/.wav/.ogg and .txt files (a caption per line),
walked without following links out of it. Prints, per modality (default: every one the gallery has),
the ``--top-k`` items by cosine similarity: rank, score, key, modality, caption (a picture's or
recording's is its sample's first caption), file (``shard.tar:member`` for a shard item).
The gallery's embeddings are cached beside it (``GALLERY/.unimodal_free-search/``, else
``~/.cache/unimodal_free/search/``), keyed by the model and by each gallery file's path, size and mtime:
the next search embeds only the query, and only changed files are read again.
``--html``: a self-contained contact sheet (thumbnails, audio players, captions, scores).
Exit status 2 with one ``error:`` line for a bad flag, a missing model or gallery, an empty gallery,
an unreadable query file or a modality the gallery lacks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from unimodal_free.bounded_read import BoundedReadError, read_bounded
from unimodal_free.embedder import Embedder, file_modality
from unimodal_free.modalities import MODALITIES, MODALITY
from unimodal_free.search.gallery import item_bytes, list_gallery, sample_caption
from unimodal_free.search.html import contact_sheet, query_html
from unimodal_free.search.options import add_model_gallery_args, embedded_gallery, load_model, require_positive
from unimodal_free.search.ranking import format_hits, printable, rank
from unimodal_free.store.checkpoints import CheckpointError
from unimodal_free.store.rebuild import EvalError
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors

QUERY_FLAGS = ("text", "image", "speech")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m unimodal_free.search", description=__doc__.split("\n\n")[0])
    add_model_gallery_args(p)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help="the query: a caption")
    query.add_argument("--image", help="the query: a picture (.jpg .jpeg .png .webp)")
    query.add_argument("--speech", help="the query: a recording (.flac .wav .ogg)")
    p.add_argument("--modality", action="append", choices=MODALITIES,
                   help="rank only these gallery items (repeatable; default: every modality the gallery has)")
    p.add_argument("--top-k", type=int, default=10, help="hits per modality (default 10)")
    p.add_argument("--html", default=None, metavar="OUT", help="write a self-contained contact sheet here")
    args = p.parse_args(argv)
    require_positive(p, args, "top_k", "batch_size")
    if args.text is not None and not args.text.split():
        p.error("--text: empty caption")
    return args


def query_of(args: argparse.Namespace) -> tuple[str, str, Optional[Path]]:
    """(modality, the flag's value, the file or None); a query file is checked before any model loads."""
    modality = next(m for m in QUERY_FLAGS if getattr(args, m) is not None)
    value = getattr(args, modality)
    if modality == "text":
        return modality, value, None
    path = Path(value).expanduser()
    if not path.is_file():
        raise UsageError(f"--{modality} {value}: {'not a regular file' if path.exists() else 'file not found'}")
    if file_modality(path) != modality:
        raise UsageError(f"--{modality} {value}: a {file_modality(path)} file; --{modality} takes "
                         f"{' '.join('.' + e for e in MODALITY[modality].extensions)}")
    return modality, value, path


def query_media(path: Optional[Path], embedder: Embedder) -> bytes | str | None:
    """The query file's bytes for the contact sheet (or why not); None for a text query."""
    if path is None:
        return None
    try:
        return read_bounded(path, embedder.cfg.data.max_member_bytes, "data.max_member_bytes")
    except BoundedReadError as exc:
        return exc.reason


@usage_errors(EvalError, CheckpointError, FileNotFoundError, ValueError)
def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    modality, value, path = query_of(args)
    if args.html and not Path(args.html).expanduser().parent.is_dir():
        raise UsageError(f"--html {args.html}: its folder does not exist")
    gallery = list_gallery(args.gallery)
    embedder = load_model(args)
    if modality not in embedder.modalities:
        raise UsageError(f"--{modality}: this model was trained without {modality} (it has {embedder.modalities})")
    query = embedder.embed([path if path is not None else value])[0]  # (D,)
    done, status = embedded_gallery(gallery, embedder, args)
    items = done.cached.items
    modalities = [item.modality for item in items]
    present = [m for m in MODALITIES if m in modalities]
    wanted = args.modality or present
    for m in wanted:
        if m not in present:
            raise UsageError(f"--modality {m}: the gallery has no {m} items (it has {', '.join(present)})")
    wanted = list(dict.fromkeys(wanted))
    hits = rank(query, done.cached.embeddings, modalities, wanted, args.top_k)
    captions = sample_caption(items)
    counts = ", ".join(f"{m} {modalities.count(m)}" for m in present)
    print(f"model {embedder.source} (step {embedder.step}, {embedder.which}); gallery {args.gallery}: "
          f"{len(items)} items ({counts}); {status}")
    print(f"query ({modality}): {printable(value, 200)}")
    for m in wanted:
        print()
        print(format_hits(m, hits[m], items, captions, modalities.count(m)))
    if args.html:
        shown = [items[h.index] for m in wanted for h in hits[m] if items[h.index].modality in ("image", "speech")]
        media = item_bytes(gallery, shown, embedder.cfg.data)
        max_seconds = embedder.cfg.data.max_speech_seconds
        page = contact_sheet(f"search: {value}", query_html(modality, value, query_media(path, embedder), max_seconds),
                             hits, items, captions, media, max_seconds)
        Path(args.html).expanduser().write_text(page, encoding="utf-8")
        print(f"\ncontact sheet: {args.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
