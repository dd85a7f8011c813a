"""Retrieval eval of one joint model on held-out paired shards: used by the trainer
every ``eval.every`` steps (rank 0) and by ``python -m unimodal_free.eval``."""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from unimodal_free.config import DataConfig, EvalConfig
from unimodal_free.data.loading.loader import EvalLoader
from unimodal_free.eval.embed import EmbeddingSet, embed_batches, embed_captions
from unimodal_free.eval.heldout_labels import heldout_label_metrics
from unimodal_free.eval.report import flat_metrics
from unimodal_free.eval.retrieval import cross_modal_retrieval
from unimodal_free.eval.visuals import write_visuals
from unimodal_free.model import pooled_embedding, unwrap


class EvalOutput(dict):
    """Flat metrics ``{"{a}_to_{b}_R@{k}": v, "{a}_to_{b}_median_rank": v, ...}`` (log them as they are).

    Attributes: ``results`` the nested per-direction metrics (the JSON the CLI
    writes), ``embeddings`` the :class:`EmbeddingSet` behind them, ``skipped``
    undecodable samples, ``seconds`` wall time, ``model_name``; ``labels`` the held-out label metrics
    (``eval.label_metrics``; also in the flat dict) and ``label_seconds`` what they cost (part of ``seconds``).
    """

    results: dict[str, dict[str, Any]]
    embeddings: EmbeddingSet
    skipped: int
    seconds: float
    model_name: str
    labels: dict[str, float]
    label_seconds: float


def _embed(model: torch.nn.Module, batch) -> dict[str, torch.Tensor]:
    # Projected when the model has an alignment head (objective.align_weight > 0), else the pooled latents.
    return pooled_embedding(model, batch, project=True)


def _label_metrics(model, emb: EmbeddingSet, which: str, tokenizer, data_cfg: DataConfig, device) -> dict[str, float]:
    """``eval.label_metrics`` on the embedded held-out set: k-NN, and zero-shot through the model's text path."""
    if which == "off" or not any(lab for rows in emb.labels.values() for lab in rows):
        return {}
    embed_texts = None
    if which == "knn+zeroshot" and "text" in unwrap(model).modalities:
        embed_texts = lambda prompts: embed_captions(model, prompts, _embed, tokenizer, data_cfg, device)  # noqa: E731
    return heldout_label_metrics(emb, embed_texts)


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

    ``loader`` is :func:`unimodal_free.data.loading.loader.make_eval_loader`'s; ``eval_cfg`` says the pooling and
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
        labels_start = time.perf_counter()
        labels = _label_metrics(model, emb, eval_cfg.label_metrics, tokenizer, data_cfg, device)
        label_seconds = time.perf_counter() - labels_start
    finally:
        model.train(was_training)
    results = cross_modal_retrieval(emb.embeddings, emb.pair_ids, min_queries=eval_cfg.min_queries)
    out = EvalOutput({**flat_metrics(results), **labels})
    out.results, out.embeddings, out.skipped, out.model_name = results, emb, loader.skipped, model_name
    out.labels, out.label_seconds = labels, label_seconds
    if writer is not None:
        write_visuals(writer, emb, step, prefix, projector=projector)
    out.seconds = time.perf_counter() - start
    return out
