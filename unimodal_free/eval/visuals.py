"""Eval pictures in TensorBoard: a similarity figure per modality pair and an
embedding-projector entry (thumbnails, modality, pair and caption of every point)."""

from __future__ import annotations

import itertools

import torch

from unimodal_free.eval.embed import EmbeddingSet
from unimodal_free.eval.figures import similarity_figure
from unimodal_free.eval.thumbnails import THUMB_SIZE
from unimodal_free.modalities import CAPTION_MODALITY, MODALITIES

# A flat tile stands in for the thumbnail of a modality without one (text: a caption rendered in a 32-pixel
# cell is unreadable; the projector shows the caption column on hover and as point labels instead).
TILE_COLOURS = {"text": (0.20, 0.45, 0.85)}
METADATA_HEADER = ["modality", "pair", "caption", "key"]


def first_rows(pair_ids: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Index of the first row of each pair id in ``wanted`` (all must be present), in that order."""
    first: dict[int, int] = {}
    for row, pid in enumerate(pair_ids.tolist()):
        first.setdefault(pid, row)
    return torch.tensor([first[p] for p in wanted.tolist()], dtype=torch.long)


def similarity_matrices(emb: EmbeddingSet, max_pairs: int = 64) -> dict[tuple[str, str], torch.Tensor]:
    """{(a, b): (P, P)} cosine similarities of the first ``max_pairs`` pairs that have both a and b.

    Row i (modality a) and column i (modality b) are the same pair. One
    matrix per unordered pair (b -> a is the transpose).
    """
    matrices = {}
    for a, b in itertools.combinations([m for m in MODALITIES if m in emb.modalities], 2):
        ia, ib = emb.pair_ids[a], emb.pair_ids[b]
        shared = ia[torch.isin(ia, ib)]
        order = list(dict.fromkeys(shared.tolist()))[:max_pairs]  # first appearance order, unique
        if len(order) < 2:
            continue
        wanted = torch.tensor(order)
        matrices[(a, b)] = emb.embeddings[a][first_rows(ia, wanted)] @ emb.embeddings[b][first_rows(ib, wanted)].T
    return matrices


def _cell(text: str, limit: int = 300) -> str:
    """A metadata.tsv cell: tabs and newlines (which would break the table) become spaces; never empty."""
    return " ".join(str(text).split())[:limit] or "-"


def text_captions(emb: EmbeddingSet) -> list[str]:
    """The caption of every text row, or [] when the set was embedded without a tokenizer to decode them."""
    rows = emb.rows(CAPTION_MODALITY)
    return emb.captions if rows and len(emb.captions) == rows else []


def pair_captions(emb: EmbeddingSet) -> dict[int, str]:
    """Pair id -> its first caption."""
    first: dict[int, str] = {}
    texts = text_captions(emb)
    for pid, caption in zip(emb.pair_ids[CAPTION_MODALITY].tolist() if texts else [], texts):
        first.setdefault(pid, caption)
    return first


def projector_entry(emb: EmbeddingSet, max_per_modality: int = 200):
    """(mat (N, D), metadata rows (METADATA_HEADER), label_img (N, 3, T, T)) for add_embedding.

    A modality with thumbnails is limited to its rows that have one, so every
    point shows its own picture or spectrogram; text points get a flat tile.
    Every point's caption column holds its pair's first caption (a text
    point: its own), so image and speech points read as what they show.
    """
    captions = pair_captions(emb)
    mats, meta, imgs = [], [], []
    for m in emb.modalities:
        n = min(emb.rows(m), max_per_modality)
        if m in emb.thumbnails:
            n = min(n, emb.thumbnails[m].shape[0])
            tiles = emb.thumbnails[m][:n]
        else:
            colour = torch.tensor(TILE_COLOURS.get(m, (0.5, 0.5, 0.5)))
            tiles = colour[None, :, None, None].expand(n, 3, THUMB_SIZE, THUMB_SIZE)
        own = text_captions(emb)[:n] if m == CAPTION_MODALITY else []
        pids = emb.pair_ids[m][:n].tolist()
        mats.append(emb.embeddings[m][:n])
        imgs.append(tiles)
        meta += [[m, _cell(emb.pair_names[p]), _cell(own[i] if own else captions.get(p, "")), _cell(k)]
                 for i, (p, k) in enumerate(zip(pids, emb.keys[m][:n]))]
    if not mats or len({t.shape[1] for t in mats}) != 1:
        return None
    return torch.cat(mats), meta, torch.cat(imgs)


def write_visuals(writer, emb: EmbeddingSet, step: int, prefix: str = "val", projector: bool = True) -> None:
    """Similarity figures (``{prefix}/similarity/{a}_{b}``) and the projector entry (``{prefix}/embeddings``)."""
    for (a, b), sims in similarity_matrices(emb).items():
        # close=False: the figure is not pyplot's (figures.py), so there is nothing to close; it is freed here.
        writer.add_figure(f"{prefix}/similarity/{a}_{b}", similarity_figure(sims, a, b, step), step, close=False)
    entry = projector_entry(emb) if projector else None
    if entry is not None:
        mat, meta, label_img = entry
        writer.add_embedding(
            mat, metadata=meta, label_img=label_img, global_step=step,
            tag=f"{prefix}/embeddings", metadata_header=METADATA_HEADER,
        )
    writer.flush()
