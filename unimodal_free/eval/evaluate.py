"""Retrieval eval of one joint model on held-out paired shards: used by the trainer
every ``eval.every`` steps (rank 0) and by ``python -m unimodal_free.eval``."""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from unimodal_free.config import DataConfig, EvalConfig
from unimodal_free.data.loader import EvalLoader
from unimodal_free.eval.embed import EmbeddingSet, embed_batches
from unimodal_free.eval.report import flat_metrics
from unimodal_free.eval.retrieval import cross_modal_retrieval
from unimodal_free.eval.visuals import write_visuals
from unimodal_free.model import pooled_embedding


class EvalOutput(dict):
    """Flat metrics ``{"{a}_to_{b}_R@{k}": v, "{a}_to_{b}_median_rank": v, ...}`` (log them as they are).

    Attributes: ``results`` the nested per-direction metrics (the JSON the CLI
    writes), ``embeddings`` the :class:`EmbeddingSet` behind them, ``skipped``
    undecodable samples, ``seconds`` wall time, ``model_name``.
    """

    results: dict[str, dict[str, Any]]
    embeddings: EmbeddingSet
    skipped: int
    seconds: float
    model_name: str


def _embed(model: torch.nn.Module, batch) -> dict[str, torch.Tensor]:
    # Projected when the model has an alignment head (objective.align_weight > 0), else the pooled latents.
    return pooled_embedding(model, batch, project=True)


def evaluate(
    model: torch.nn.Module,
    loader: EvalLoader,
    eval_cfg: EvalConfig,
    data_cfg: DataConfig,
    tokenizer,
    device: torch.device | str,
    max_samples: Optional[int] = None,
    model_name: str = "teacher",
    writer=None,
    step: int = 0,
    prefix: str = "val",
    projector: bool = True,
) -> EvalOutput:
    """Embed the first ``max_samples`` samples of ``loader`` (all when None) and score retrieval.

    ``loader`` is :func:`unimodal_free.data.loader.make_eval_loader`'s; ``eval_cfg`` says the pooling and
    ``min_queries``, ``data_cfg`` how to draw thumbnails. ``model`` is a full (not ZeRO-3-partitioned)
    student or teacher module, or a wrapper with ``.module``; its train/eval mode is restored afterwards.
    With ``writer`` (a SummaryWriter) the similarity figures and the projector
    entry (unless ``projector`` is False: it writes the embeddings as text)
    are written under ``prefix``; scalars are left to the caller.
    """
    if eval_cfg.pooling != "mean":
        raise ValueError(f"eval.pooling: {eval_cfg.pooling!r} is not supported (only 'mean')")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        emb = embed_batches(model, loader, _embed, device, data_cfg, max_samples, tokenizer=tokenizer)
    finally:
        model.train(was_training)
    results = cross_modal_retrieval(emb.embeddings, emb.pair_ids, min_queries=eval_cfg.min_queries)
    out = EvalOutput(flat_metrics(results))
    out.results, out.embeddings, out.skipped, out.model_name = results, emb, loader.skipped, model_name
    if writer is not None:
        write_visuals(writer, emb, step, prefix, projector=projector)
    out.seconds = time.perf_counter() - start
    return out
