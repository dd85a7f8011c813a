"""Retrieval and cross-modal similarity at every depth of the encoder, for one model of a finished run.

Levels, each pooled as the eval pools (mean over the N latent slots of the
unmasked input, L2-normalised):

    block 1 .. block L   the raw output of each latent block (``JointModel.encode``, no final norm)
    final                the final LayerNorm of block L: what retrieval without a head sees
    head                 final through the alignment projection (only when the model has one):
                         what retrieval sees; the only level with a projection

At each level: R@1 per direction (``cross_modal_retrieval``, as the eval)
and linear CKA between every two modalities over the held-out samples that
have both (first row of each pair id), beside the CKA of the same rows with
the pairs broken (one modality's rows shuffled): the level unpaired features
already reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from unimodal_free.batch import Batch, split_rows
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.modalities import MODALITIES
from unimodal_free.eval.cka import linear_cka
from unimodal_free.eval.embed import embed_batches
from unimodal_free.eval.retrieval import cross_modal_retrieval
from unimodal_free.experiments.runner import heldout_sources, load_trained
from unimodal_free.model.joint import JointModel

PAIRS = [(a, b) for i, a in enumerate(MODALITIES) for b in MODALITIES[i + 1:]]


@dataclass
class Level:
    name: str
    retrieval: dict  # cross_modal_retrieval's result
    cka: dict[str, float]  # "a-b" -> linear CKA
    cka_shuffled: dict[str, float]  # the same with the pairs broken (see cross_modal_cka)


def level_names(model: JointModel) -> list[str]:
    blocks = len(model.encoder.latent_stacks()[0])
    return [f"block {i + 1}" for i in range(blocks)] + ["final"] + (["head"] if model.align is not None else [])


@torch.no_grad()
def level_embeddings(model: JointModel, batch: Batch) -> dict[str, list[torch.Tensor]]:
    """{modality: [(rows, width) per level]}, L2-normalised, in ``level_names`` order."""
    if not batch.parts:
        return {}
    blocks = model.encode(batch.parts)  # L x (rows, N, D)
    pooled = [z.mean(1) for z in blocks] + [model.norm(blocks[-1]).mean(1)]  # (rows, D) each
    out = {name: [] for name in batch.parts}
    for z in pooled:
        for name, zm in split_rows(z, batch.parts).items():  # (B_m, D)
            out[name].append(zm)
    if model.align is not None:
        for name in batch.parts:
            out[name].append(model.align.embed(name, out[name][-1]))  # (B_m, A)
    return {name: [F.normalize(z.float(), dim=-1) for z in levels] for name, levels in out.items()}


def first_rows(ids: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Index of the first row of each pair id in ``wanted`` (every one must occur in ``ids``)."""
    first: dict[int, int] = {}
    for row, i in enumerate(ids.tolist()):
        first.setdefault(i, row)
    return torch.tensor([first[i] for i in wanted.tolist()], dtype=torch.long)


def cross_modal_cka(embeddings: dict[str, torch.Tensor], pair_ids: dict[str, torch.Tensor],
                    shuffled: bool = False) -> dict[str, float]:
    """Linear CKA of every two modalities over the pair ids both have ("a-b" -> value).

    ``shuffled``: the same with b's rows in a fixed random order (pairs broken), the level CKA reaches
    without any pairing at this sample count and these features' spectra.
    """
    out = {}
    for a, b in PAIRS:
        if a not in embeddings or b not in embeddings:
            continue
        shared = pair_ids[a][torch.isin(pair_ids[a], pair_ids[b])].unique()
        if shared.numel() < 3:
            continue
        xa = embeddings[a][first_rows(pair_ids[a], shared)]  # (P, D) row i = pair shared[i]
        xb = embeddings[b][first_rows(pair_ids[b], shared)]
        if shuffled:
            xb = xb[torch.randperm(xb.shape[0], generator=torch.Generator().manual_seed(0))]
        out[f"{a}-{b}"] = linear_cka(xa, xb)
    return out


def blockwise(run_dir: Path, which: str, heldout: Optional[list[str]] = None,
              device: Optional[torch.device] = None) -> list[Level]:
    """Every level's retrieval and CKA for the run's ``which`` ("student"/"teacher") model on held-out data."""
    model, cfg, tokenizer = load_trained(run_dir, which, device)
    device = next(model.parameters()).device
    model.eval()
    names = level_names(model)
    widths: list[int] = []

    def embed_fn(m, batch):  # every level side by side, split again below
        levels = level_embeddings(m, batch)
        if levels and not widths:
            widths.extend(z.shape[1] for z in next(iter(levels.values())))
        return {name: torch.cat(zs, dim=1) for name, zs in levels.items()}  # (rows, sum of widths)

    loader = make_eval_loader(cfg.data, heldout_sources(cfg.data, heldout), tokenizer, cfg.train.micro_batch_size)
    emb = embed_batches(model, loader, embed_fn, device, cfg.data, cfg.eval.max_samples, max_thumbnails=0)
    split = {m: z.split(widths, dim=1) for m, z in emb.embeddings.items()}
    out = []
    for i, name in enumerate(names):
        at = {m: levels[i] for m, levels in split.items()}
        out.append(Level(name, cross_modal_retrieval(at, emb.pair_ids, min_queries=cfg.eval.min_queries),
                         cross_modal_cka(at, emb.pair_ids), cross_modal_cka(at, emb.pair_ids, shuffled=True)))
    return out
