"""Embed held-out paired shards with one joint model, every modality alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from unimodal_free.batch import Batch, collate_elements
from unimodal_free.data.reading.elements import text_elements
from unimodal_free.eval.thumbnails import element_thumbnail
from unimodal_free.modalities import MODALITY


@dataclass
class EmbeddingSet:
    """Pooled embeddings of every row read, grouped by modality, with pair ids as integers."""

    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> (rows_m, D) float32, L2-normalised
    pair_ids: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> (rows_m,) int64 into pair_names
    keys: dict[str, list[str]] = field(default_factory=dict)  # m -> (rows_m,) sample keys
    # m -> (rows_m,) each row's sample labels {field: value} from the shard's json ({} for an unlabelled sample).
    labels: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    pair_names: list[str] = field(default_factory=list)
    # m -> (n, 3, T, T) in [0, 1]: thumbnails of the first ``max_thumbnails`` rows of each modality that has
    # one (image: the picture, speech: its log-mel spectrogram).
    thumbnails: dict[str, torch.Tensor] = field(default_factory=dict)
    captions: list[str] = field(default_factory=list)  # (rows_text,) each text row decoded from its tokens

    def rows(self, modality: str) -> int:
        return int(self.pair_ids[modality].numel()) if modality in self.pair_ids else 0

    @property
    def modalities(self) -> list[str]:
        return [m for m in self.embeddings if self.rows(m) > 0]


@torch.no_grad()
def embed_batches(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    embed_fn,
    device: torch.device | str,
    data_cfg,
    max_samples: int | None = None,
    max_thumbnails: int = 256,
    tokenizer=None,
) -> EmbeddingSet:
    """Run ``embed_fn(model, batch) -> {m: (rows, D)}`` over ``batches`` in order.

    Only rows that carry a pair id are kept (unpaired rows cannot be
    retrieved). Reading stops once ``max_samples`` distinct pair ids were
    seen; rows of later pair ids in the last batch are dropped, so the result
    is the first ``max_samples`` samples of the shards (pair ids), in order.
    ``data_cfg`` (``cfg.data``) says how to draw thumbnails; with ``tokenizer``
    each text row's tokens are decoded back to its caption (the projector's label).
    """
    index_of: dict[str, int] = {}
    pair_names: list[str] = []
    chunks: dict[str, list[torch.Tensor]] = {}
    ids: dict[str, list[torch.Tensor]] = {}
    keys: dict[str, list[str]] = {}
    labels: dict[str, list[dict[str, str]]] = {}
    thumbs: dict[str, list[torch.Tensor]] = {}
    captions: list[str] = []
    for batch in batches:
        pooled = embed_fn(model, batch.to(device))
        # Batch-local pair index -> global integer pair id (in order of first appearance).
        local = torch.full((len(batch.pair_ids) + 1,), -1, dtype=torch.long)  # last slot: pair_index -1
        for i, name in enumerate(batch.pair_ids):
            if name not in index_of and (max_samples is None or len(pair_names) < max_samples):
                index_of[name] = len(pair_names)
                pair_names.append(name)
            local[i] = index_of.get(name, -1)
        for m, part in batch.parts.items():
            global_ids = local[part.pair_index.cpu()]  # (rows,)
            keep = global_ids >= 0
            if not bool(keep.any()):
                continue
            chunks.setdefault(m, []).append(pooled[m].detach().float().cpu()[keep])
            ids.setdefault(m, []).append(global_ids[keep])
            rows = keep.nonzero().flatten().tolist()  # the kept rows, in order
            keys.setdefault(m, []).extend(part.keys[row] for row in rows)
            labels.setdefault(m, []).extend(dict(part.labels[row]) for row in rows)
            done = thumbs.setdefault(m, [])
            for row in rows[: max(0, max_thumbnails - len(done))]:
                real = ~part.padding[row].cpu()
                thumb = element_thumbnail(m, part.values[row].cpu()[real], part.coords[row].cpu()[real], data_cfg)
                if thumb is not None:
                    done.append(thumb)
            if MODALITY[m].tokens and tokenizer is not None:
                captions += [tokenizer.decode(part.values[row].cpu()[~part.padding[row].cpu()].tolist()) for row in rows]
        if max_samples is not None and len(pair_names) >= max_samples:
            break
    out = EmbeddingSet(pair_names=pair_names)
    for m in chunks:
        out.embeddings[m] = torch.cat(chunks[m])
        out.pair_ids[m] = torch.cat(ids[m])
        out.keys[m] = keys[m]
        out.labels[m] = labels[m]
    out.thumbnails = {m: torch.stack(t) for m, t in thumbs.items() if t}
    out.captions = captions
    return out


@torch.no_grad()
def embed_captions(model: torch.nn.Module, captions: list[str], embed_fn, tokenizer, data_cfg,
                   device: torch.device | str, batch_size: int = 256) -> torch.Tensor:
    """(len(captions), D): short texts (zero-shot prompts) embedded like the held-out text rows, in order."""
    out = []
    for start in range(0, len(captions), batch_size):
        rows = [(text_elements(" ".join(c.split()), tokenizer, data_cfg.max_text_tokens, f"prompt {start + i}",
                               data_cfg.max_caption_chars), str(start + i), None)
                for i, c in enumerate(captions[start : start + batch_size])]
        batch = collate_elements(rows)  # one modality: rows stay in order
        out.append(embed_fn(model, batch.to(device))["text"].detach().float().cpu())
    return torch.cat(out) if out else torch.empty(0)
