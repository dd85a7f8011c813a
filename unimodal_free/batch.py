"""The one batch format shared by the data pipeline, the model and the eval.

Every sample, whatever its modality, is an array of *elements*: raw
per-element ``values``, ``coords`` in [-1, 1] and a modality name. A batch
holds one :class:`ModalityBatch` per modality present, padded only within
that modality. A paired sample (image + caption + speech) contributes one row
to each of its modalities' sub-batches; ``pair_index`` ties the rows together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from unimodal_free.modalities import MODALITIES, TABLE


@dataclass
class Elements:
    """One sample's elements for one modality (before batching)."""

    modality: str
    values: torch.Tensor  # (M, C) float32; text: (M,) int64 token ids
    coords: torch.Tensor  # (M, D) float32 in [-1, 1]

    @property
    def num_elements(self) -> int:
        return int(self.coords.shape[0])


@dataclass
class Rows:
    """Padded rows of one modality's elements: all the encoder reads.

    A batch's sub-batch (:class:`ModalityBatch`) and a student's masked views
    (``objective.masking.MaskedView``) are both Rows, so the model takes
    either as it is, with no repacking into tuples on the way.
    """

    values: torch.Tensor  # (B, M, C) float32; text: (B, M) int64 token ids
    coords: torch.Tensor  # (B, M, D) float32 in [-1, 1]
    padding: torch.Tensor  # (B, M) bool, True where the element is padding

    @property
    def rows(self) -> int:
        return int(self.coords.shape[0])


def split_rows(x: torch.Tensor, parts: Mapping[str, Rows]) -> dict[str, torch.Tensor]:
    """x (sum B_m, ...), rows concatenated in ``parts`` order -> {m: (B_m, ...)}.

    The inverse of the model's one pass over every modality's rows at once.
    """
    return dict(zip(parts, x.split([p.rows for p in parts.values()], dim=0)))


@dataclass
class ModalityBatch(Rows):
    """One modality's rows, padded to the longest row of this modality only."""

    pair_index: torch.Tensor  # (B,) int64 -> Batch.pair_ids, -1 if the row has no partner
    keys: list[str] = field(default_factory=list)  # (B,) sample keys
    # (B,) each row's sample labels {field: value} ({} for none): eval only, the model never sees them.
    labels: list[dict[str, str]] = field(default_factory=list)
    # Host-side copies, as Python ints, of what decides shapes in a step: (B,) real elements per row and
    # (B,) pair_index. The masking and the alignment read these, never the device tensors, so a step on a
    # GPU does not wait for the device to learn a size. The collate sets them from the rows it pads;
    # built without them, they are read once from ``padding`` and ``pair_index`` here.
    lengths: tuple[int, ...] = ()
    pairs: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.labels:  # built without labels: an empty dict per key, so the two stay parallel
            self.labels = [{} for _ in self.keys]
        if len(self.labels) != len(self.keys):
            raise ValueError(f"ModalityBatch: {len(self.labels)} label dicts for {len(self.keys)} keys")
        if not self.lengths and self.rows:
            self.lengths = tuple((~self.padding).sum(1).tolist())
        if not self.pairs and self.rows:
            self.pairs = tuple(self.pair_index.tolist())
        if len(self.lengths) != self.rows or len(self.pairs) != self.rows:
            raise ValueError(f"ModalityBatch: {len(self.lengths)} lengths and {len(self.pairs)} pair ids "
                             f"for {self.rows} rows")

    def to(self, device: torch.device | str) -> "ModalityBatch":
        return ModalityBatch(
            values=self.values.to(device, non_blocking=True),
            coords=self.coords.to(device, non_blocking=True),
            padding=self.padding.to(device, non_blocking=True),
            pair_index=self.pair_index.to(device, non_blocking=True),
            keys=list(self.keys),
            labels=[dict(d) for d in self.labels],
            lengths=self.lengths,
            pairs=self.pairs,
        )


@dataclass
class Batch:
    """A mixed-modality batch: sub-batches keyed by modality name, in MODALITIES order."""

    parts: dict[str, ModalityBatch]
    pair_ids: list[str] = field(default_factory=list)
    # Corrupt samples skipped by the reader since the previous batch.
    skipped: int = 0

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts.values())

    def num_elements(self) -> int:
        """Real (non-padding) elements in the batch."""
        return sum(sum(p.lengths) for p in self.parts.values())

    def padding_waste(self) -> float:
        """Share of element slots that are padding."""
        total = sum(p.padding.numel() for p in self.parts.values())
        return 0.0 if total == 0 else 1.0 - self.num_elements() / total

    def to(self, device: torch.device | str) -> "Batch":
        return Batch({m: p.to(device) for m, p in self.parts.items()}, list(self.pair_ids), self.skipped)


class Row(NamedTuple):
    """One row before batching: a sample's elements of one modality, its key, pair id and labels."""

    elements: Elements
    key: str
    pair: str | None
    labels: Mapping[str, str] | None = None  # {field: value}; None: none


def collate_elements(samples: list[Row | tuple[Elements, str, str | None]]) -> Batch:
    """Pad a list of rows (:class:`Row`, or a bare ``(elements, key, pair_id)``) into a :class:`Batch`.

    Rows are grouped by modality (in MODALITIES order); each modality is padded
    to its own longest row, never across modalities.
    """
    pair_ids: list[str] = []
    pair_pos: dict[str, int] = {}
    by_modality: dict[str, list[tuple[Row, int]]] = {}
    for row in (Row(*s) for s in samples):
        index = -1
        if row.pair is not None:
            if row.pair not in pair_pos:
                pair_pos[row.pair] = len(pair_ids)
                pair_ids.append(row.pair)
            index = pair_pos[row.pair]
        by_modality.setdefault(row.elements.modality, []).append((row, index))
    parts = {}
    for modality in MODALITIES:
        rows = by_modality.get(modality)
        if not rows:
            continue
        longest = max(r.elements.num_elements for r, _ in rows)
        first = rows[0][0].elements
        values = first.values.new_zeros((len(rows), longest) + tuple(first.values.shape[1:]))
        coords = first.coords.new_zeros((len(rows), longest, first.coords.shape[1]))
        padding = torch.ones(len(rows), longest, dtype=torch.bool)
        for i, (r, _) in enumerate(rows):
            m = r.elements.num_elements
            values[i, :m] = r.elements.values
            coords[i, :m] = r.elements.coords
            padding[i, :m] = False
        pairs = tuple(i for _, i in rows)
        parts[modality] = ModalityBatch(
            values=values,
            coords=coords,
            padding=padding,
            pair_index=torch.tensor(pairs, dtype=torch.long),
            keys=[r.key for r, _ in rows],
            labels=[dict(r.labels or {}) for r, _ in rows],
            lengths=tuple(r.elements.num_elements for r, _ in rows),
            pairs=pairs,
        )
    # Pairs with a single row in this batch cannot be aligned; keep ids anyway.
    return Batch(parts=parts, pair_ids=pair_ids)


@dataclass(frozen=True)
class ModalitySpec:
    """What the model needs to know of a modality's elements: their width."""

    name: str
    coord_dims: int
    value_dim: int = 0  # continuous values per element (image, speech)
    vocab_size: int = 0  # token ids (text): embedding lookup instead of values


def modality_specs(data_cfg, vocab_size: int) -> dict[str, ModalitySpec]:
    """Element widths implied by the data config (``cfg.data``) and the tokenizer's vocabulary (modality table)."""
    return {
        m.name: ModalitySpec(m.name, m.coord_dims, vocab_size=vocab_size) if m.tokens
        else ModalitySpec(m.name, m.coord_dims, value_dim=m.value_width(data_cfg))
        for m in TABLE
    }
