"""``EmbeddingSet.labels`` read from the shards' json by sample key, for an EmbeddingSet made without them.

A sample's labels are its json ``"labels"`` object (``{"shape": "circle", "colour": "red"}``); demo
shards, whose json carries ``size``, ``colour``, ``shape`` and ``position`` at the top level, are read
as those four. Values are kept as strings; anything else in the json is ignored.
"""

from __future__ import annotations

import json
from typing import Any

from unimodal_free.config import DataConfig, Source
from unimodal_free.data.elements import MAX_META_BYTES
from unimodal_free.data.handlers import SkipCounter
from unimodal_free.data.samples import SKIP, single_pass_samples
from unimodal_free.data.sources import expand_shards
from unimodal_free.eval.embed import EmbeddingSet

DEMO_FIELDS = ("size", "colour", "shape", "position")


def labels_of(meta: Any) -> dict[str, str]:
    """The label dict of one parsed json ({} when it carries none)."""
    if not isinstance(meta, dict):
        return {}
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = {f: meta[f] for f in DEMO_FIELDS if f in meta}
    return {str(k): str(v) for k, v in labels.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}


def shard_labels(sources: list[Source], data_cfg: DataConfig) -> dict[str, dict[str, str]]:
    """{sample key: labels} of every sample of ``sources`` whose json carries some (unreadable json: none)."""
    out = {}
    for sample in single_pass_samples([u for s in sources for u in expand_shards(s)], SkipCounter("labels"), data_cfg):
        if SKIP in sample or "json" not in sample or len(sample["json"]) > MAX_META_BYTES:
            continue  # the eval loader skips and counts a refused sample or an oversized json
        try:
            labels = labels_of(json.loads(sample["json"].decode("utf-8")))
        except (ValueError, UnicodeDecodeError):
            continue
        if labels:
            out[sample["__key__"]] = labels
    return out


def attach_labels(emb: EmbeddingSet, sources: list[Source], data_cfg: DataConfig) -> EmbeddingSet:
    """Fill ``emb.labels`` (one dict per row of each modality, parallel to ``emb.keys``) unless it is filled."""
    if not emb.labels:
        by_key = shard_labels(sources, data_cfg)
        emb.labels = {m: [by_key.get(k, {}) for k in keys] for m, keys in emb.keys.items()}
    return emb
