"""Eval pictures in TensorBoard: a similarity heatmap per modality pair and an
embedding-projector entry (image thumbnails, modality labels)."""

from __future__ import annotations

import itertools

import torch

from unimodal_free.config import MODALITIES
from unimodal_free.eval.embed import EmbeddingSet
from unimodal_free.eval.thumbnails import THUMB_SIZE, heatmap

# Flat tiles standing in for thumbnails of rows that are not images.
TILE_COLOURS = {"speech": (0.95, 0.55, 0.15), "text": (0.20, 0.45, 0.85)}


def first_rows(pair_ids: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Index of the first row of each pair id in ``wanted`` (all must be present), in that order."""
    first: dict[int, int] = {}
    for row, pid in enumerate(pair_ids.tolist()):
        first.setdefault(pid, row)
    return torch.tensor([first[p] for p in wanted.tolist()], dtype=torch.long)


def similarity_images(emb: EmbeddingSet, max_pairs: int = 64) -> dict[str, "object"]:
    """{"a_b": (H, W, 3) uint8}: cosine similarities of the first ``max_pairs`` shared pairs.

    Row i (modality a) and column i (modality b) are the same pair, so a model
    that aligns modalities shows a bright diagonal. One picture per unordered
    pair (b->a is the transpose).
    """
    images = {}
    for a, b in itertools.combinations([m for m in MODALITIES if m in emb.modalities], 2):
        ia, ib = emb.pair_ids[a], emb.pair_ids[b]
        shared = ia[torch.isin(ia, ib)]
        order = list(dict.fromkeys(shared.tolist()))[:max_pairs]  # first appearance order, unique
        if len(order) < 2:
            continue
        wanted = torch.tensor(order)
        sims = emb.embeddings[a][first_rows(ia, wanted)] @ emb.embeddings[b][first_rows(ib, wanted)].T  # (P, P)
        images[f"{a}_{b}"] = heatmap(sims)
    return images


def _cell(text: str) -> str:
    """A metadata.tsv cell: no tabs or newlines."""
    return " ".join(str(text).split()) or "-"


def projector_entry(emb: EmbeddingSet, max_per_modality: int = 200):
    """(mat (N, D), metadata rows [modality, pair, key], label_img (N, 3, T, T)) for add_embedding.

    Image rows are limited to those with a thumbnail, so every point has its picture.
    """
    mats, meta, imgs = [], [], []
    for m in emb.modalities:
        n = min(emb.rows(m), max_per_modality)
        if m == "image":
            n = min(n, emb.thumbnails.shape[0])
            tiles = emb.thumbnails[:n]
        else:
            colour = torch.tensor(TILE_COLOURS.get(m, (0.5, 0.5, 0.5)))
            tiles = colour[None, :, None, None].expand(n, 3, THUMB_SIZE, THUMB_SIZE)
        mats.append(emb.embeddings[m][:n])
        imgs.append(tiles)
        meta += [[m, _cell(emb.pair_names[p]), _cell(k)] for p, k in zip(emb.pair_ids[m][:n].tolist(), emb.keys[m][:n])]
    if not mats or len({t.shape[1] for t in mats}) != 1:
        return None
    return torch.cat(mats), meta, torch.cat(imgs)


def write_visuals(writer, emb: EmbeddingSet, step: int, prefix: str = "val", projector: bool = True) -> None:
    """Similarity heatmaps (``{prefix}/similarity/{a}_{b}``) and the projector entry (``{prefix}/embeddings``)."""
    for name, img in similarity_images(emb).items():
        writer.add_image(f"{prefix}/similarity/{name}", img, step, dataformats="HWC")
    entry = projector_entry(emb) if projector else None
    if entry is not None:
        mat, meta, label_img = entry
        writer.add_embedding(
            mat, metadata=meta, label_img=label_img, global_step=step,
            tag=f"{prefix}/embeddings", metadata_header=["modality", "pair", "key"],
        )
    writer.flush()
