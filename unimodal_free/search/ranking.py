"""Order a gallery by cosine similarity to one query, per modality, and print the hits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unimodal_free.search.gallery import GalleryItem

CAPTION_WIDTH = 48
KEY_WIDTH = 24


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based, within its modality
    score: float  # cosine similarity to the query
    index: int  # into the gallery's items


def rank(query: torch.Tensor, gallery: torch.Tensor, modalities: list[str], wanted: list[str],
         top_k: int) -> dict[str, list[Hit]]:
    """{modality: its ``top_k`` items by cosine to ``query`` (D,)} over ``gallery`` (N, D), rows L2-normalised.

    Equal scores keep gallery order (a stable sort), so a ranking is the same on every run.
    """
    scores = gallery @ query  # (N,) cosine
    out = {}
    for m in wanted:
        rows = torch.tensor([i for i, mod in enumerate(modalities) if mod == m], dtype=torch.long)  # (N_m,)
        order = torch.argsort(scores[rows], descending=True, stable=True)[:top_k]  # (k,) into rows
        out[m] = [Hit(r + 1, float(scores[rows[j]]), int(rows[j])) for r, j in enumerate(order.tolist())]
    return out


def printable(text: str, width: int) -> str:
    """``text`` for one terminal cell: control characters (escape sequences, newlines) shown as '?', cut to ``width``."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_hits(modality: str, hits: list[Hit], items: list[GalleryItem], captions: list[str], total: int) -> str:
    """One aligned block: a title line, then rank, score, key, modality, caption, file."""
    lines = [f"{modality}: top {len(hits)} of {total}"]
    rows = [(f"{h.rank}", f"{h.score:.4f}", printable(items[h.index].key, KEY_WIDTH), items[h.index].modality,
             printable(captions[h.index], CAPTION_WIDTH), printable(items[h.index].file, 200)) for h in hits]
    header = ("rank", "score", "key", "modality", "caption", "file")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(f"{v:<{w}}" if c != 0 else f"{v:>{w}}" for c, (v, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines)
