"""Block masks in coordinate space and compact student views (MAE / data2vec 2.0).

A mask is drawn per row from random blocks centred on the row's own
elements: 2-D boxes for images, 1-D spans for speech and text. The block size
is given in elements per axis; elements are placed on grid cells with the
row's spacing, estimated from its coordinates (range / (side - 1)), so the
data package may normalise coordinates as it likes. Which block first covers
each cell is one scatter over the blocks' cells, so the cost is linear in M.
Blocks are added in a random order until the target count is reached (the
last block partially, then random elements if blocks run out), so every row
gets exactly ``round(ratio * M)`` masked elements, at most ``M - 1``. With
``inverse=True`` (data2vec 2.0 images) the blocks are what is *kept*.

The student then receives only the visible elements, gathered into a
compact ``(rows, V, ...)`` tensor with its own padding mask, so it pays only
for what it sees. Everything is vectorised over rows and seeded by a
``torch.Generator``. Every size (blocks drawn, grid, V and T) comes from the
rows' lengths on the host (``ModalityBatch.lengths``), so drawing a mask on a
GPU reads nothing back from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unimodal_free.batch import Batch, ModalityBatch, Rows
from unimodal_free.modalities import MODALITY


@dataclass
class MaskSpec:
    ratio: float  # share of real elements masked
    block: int  # block side in elements per axis
    inverse: bool  # blocks mark kept elements instead of masked ones


def mask_spec(masking_cfg, modality: str) -> MaskSpec:
    """The masking config's (``cfg.masking``) parameters for one modality, under the keys its table row names."""
    if modality not in MODALITY:
        raise ValueError(f"masking: no masking config for modality {modality!r} (known: {sorted(MODALITY)})")
    keys = MODALITY[modality].masking
    ratio, block = getattr(masking_cfg, keys.ratio), getattr(masking_cfg, keys.block)
    inverse = getattr(masking_cfg, keys.inverse) if keys.inverse else False
    if block <= 0:
        raise ValueError(f"masking: block/span size for {modality!r} must be > 0, got {block}")
    return MaskSpec(float(ratio), int(block), bool(inverse))


def num_masked(num_real: Sequence[int], ratio: float) -> list[int]:
    """Masked elements per row: round(ratio * M) (half to even), leaving at least one visible (rows with M >= 1).

    On host integers: the counts decide the views' shapes, known before the batch reaches the device.
    """
    return [min(round(int(m) * ratio), max(int(m) - 1, 0)) for m in num_real]


def block_mask(coords: torch.Tensor, padding: torch.Tensor, spec: MaskSpec, generator: torch.Generator,
               lengths: Sequence[int] | None = None) -> torch.Tensor:
    """coords (B, M, Dc), padding (B, M) -> mask (B, M) bool, True = masked (never on padding).

    ``lengths``: the rows' real element counts on the host (``ModalityBatch.lengths``); every size here
    comes from them, so the draw reads nothing back from the device. None: read from ``padding``.
    """
    B, M, Dc = coords.shape
    real = ~padding
    if lengths is None:
        lengths = real.sum(1).tolist()
    if len(lengths) != B:
        raise ValueError(f"masking: {len(lengths)} row lengths for {B} rows")
    if B and min(lengths) == 0:
        raise ValueError("masking: a row has no elements (empty sample reached the model)")
    n_mask = num_masked(lengths, spec.ratio)
    n_select = [m - n for m, n in zip(lengths, n_mask)] if spec.inverse else n_mask  # elements blocks cover
    num_real = torch.tensor(lengths, device=coords.device)  # (B,) host -> device, no read back
    # Grid spacing per row and axis: range / (side - 1), side = M^(1/Dc).
    big = torch.finfo(coords.dtype).max
    lo = coords.masked_fill(padding[..., None], big).amin(1)  # (B, Dc)
    hi = coords.masked_fill(padding[..., None], -big).amax(1)
    side = torch.round(num_real.to(coords.dtype) ** (1.0 / Dc))  # (B,)
    spacing = (hi - lo) / (side - 1).clamp(min=1)[:, None]  # (B, Dc)
    spacing = torch.where(spacing > 0, spacing, torch.ones_like(spacing))
    # Grid cell of every element per axis (padding: cell 0, never looked up).
    cell = torch.round((coords - lo[:, None, :]) / spacing[:, None, :]).long().masked_fill(padding[..., None], 0)
    # A row's cells lie in [0, max(side - 1, 1)] per axis (range / spacing = side - 1), so a grid of
    # ``extent`` cells per axis, from the host lengths, covers every row (a cell beyond a row's own grid
    # holds no element: the mask is the one a tight grid gives).
    extent = max(2, math.ceil(max(lengths, default=1) ** (1.0 / Dc)) + 1)
    stride = extent ** torch.arange(Dc, device=coords.device)  # (Dc,) row-major cell strides
    area = spec.block ** Dc
    K = max(1, math.ceil(2 * max(n_select, default=0) / area) + 1)  # enough blocks to usually cover the target
    # Random draws happen on the generator's device (a CPU generator may drive a GPU batch).
    gen_device = generator.device
    centre_idx = torch.multinomial(real.to(gen_device, torch.float32), K, replacement=True, generator=generator)
    centre_idx = centre_idx.to(coords.device)  # (B, K)
    centres = cell.gather(1, centre_idx[..., None].expand(-1, -1, Dc))  # (B, K, Dc)
    # Block k covers cells centre + offset, offset in [-(b//2), b-1-b//2] per axis (odd b symmetric).
    axis = torch.arange(spec.block, device=coords.device) - spec.block // 2
    offsets = torch.cartesian_prod(*[axis] * Dc).view(area, Dc)  # (area, Dc)
    covered = centres[:, :, None, :] + offsets  # (B, K, area, Dc)
    inside = ((covered >= 0) & (covered < extent)).all(-1)  # (B, K, area)
    flat = torch.where(inside, (covered * stride).sum(-1), 0)  # (B, K, area) row-major cell index
    block_id = torch.arange(K, device=coords.device).view(1, K, 1).expand(B, K, area)
    block_id = torch.where(inside, block_id, K)  # an outside cell leaves the table as it is
    # first block covering each grid cell: one scatter, linear in the number of covered cells.
    table = torch.full((B, extent ** Dc), K, dtype=torch.long, device=coords.device)
    table.scatter_reduce_(1, flat.reshape(B, -1), block_id.reshape(B, -1), reduce="amin")
    first = table.gather(1, (cell * stride).sum(-1)).to(coords.dtype)  # (B, M)
    # Key = index of the first block covering the element (+ noise to split a partial block);
    # uncovered elements come after all blocks in random order; padding comes last.
    noise = torch.rand(B, M, generator=generator, device=gen_device).to(coords.device, coords.dtype)
    key = (first + noise).masked_fill(padding, 2.0 * K + 2.0)
    order = key.argsort(dim=1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(M, device=coords.device).expand(B, M))
    selected = rank < torch.tensor(n_select, device=coords.device)[:, None]  # (B, M)
    return (real & ~selected) if spec.inverse else selected


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, M, ...) gathered at index (B, K) along dim 1 -> (B, K, ...)."""
    idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:])
    return x.gather(1, idx)


def compact(select: torch.Tensor, counts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """select (B, M) bool -> (index (B, K), padding (B, K)) of selected positions, in order, K = max count.

    ``counts``: each row's number of selected positions, on the host (the masking knows them exactly).
    """
    count = torch.tensor(counts, dtype=torch.long, device=select.device)  # (B,)
    K = max(counts, default=0)
    index = (~select).to(torch.uint8).argsort(dim=1, stable=True)[:, :K]  # selected first, original order
    padding = torch.arange(K, device=select.device)[None, :] >= count[:, None]  # (B, K)
    return index, padding


@dataclass
class MaskedView(Rows):
    """R masked views of one modality's rows (row b's views are rows b*R .. b*R+R-1).

    As :class:`Rows` (what the student encodes): the visible elements,
    values (B*R, V, C) or ids (B*R, V), coords (B*R, V, Dc), padding (B*R, V)
    of the compact view. ``target_*`` are the masked positions, where the
    ``elements`` target space predicts.
    """

    mask: torch.Tensor  # (B*R, M) True = masked element of the original row
    target_index: torch.Tensor  # (B*R, T) positions of masked elements in the original row
    target_coords: torch.Tensor  # (B*R, T, Dc)
    target_padding: torch.Tensor  # (B*R, T)
    num_views: int
    num_targets: tuple[int, ...]  # (B*R,) masked elements per view row, on the host


def make_views(part: ModalityBatch, spec: MaskSpec, num_views: int, generator: torch.Generator) -> MaskedView:
    """Repeat every row ``num_views`` times, mask each copy independently, keep only what is visible."""
    coords = part.coords.repeat_interleave(num_views, dim=0)  # (B*R, M, Dc)
    padding = part.padding.repeat_interleave(num_views, dim=0)  # (B*R, M)
    lengths = [m for m in part.lengths for _ in range(num_views)]  # (B*R,) host, as repeat_interleave
    mask = block_mask(coords, padding, spec, generator, lengths)  # (B*R, M)
    masked = num_masked(lengths, spec.ratio)  # exactly what every view row has masked
    vis_index, vis_padding = compact(~mask & ~padding, [m - n for m, n in zip(lengths, masked)])  # (B*R, V)
    tgt_index, tgt_padding = compact(mask, masked)  # (B*R, T)
    source = torch.arange(coords.shape[0], device=coords.device) // num_views  # (B*R,) original row
    return MaskedView(
        values=part.values[source[:, None], vis_index],  # (B*R, V, C): no (B*R, M, C) copy
        coords=_take(coords, vis_index),
        padding=vis_padding,
        mask=mask,
        target_index=tgt_index,
        target_coords=_take(coords, tgt_index),
        target_padding=tgt_padding,
        num_views=num_views,
        num_targets=tuple(masked),
    )


@torch.compiler.disable  # host-sized and drawn from a generator: eager inside a compiled step
def make_all_views(batch: Batch, masking_cfg, num_views: int, generator: torch.Generator) -> dict[str, MaskedView]:
    """``num_views`` masked views of every modality sub-batch, in ``batch.parts`` order."""
    return {name: make_views(part, mask_spec(masking_cfg, name), num_views, generator)
            for name, part in batch.parts.items()}
