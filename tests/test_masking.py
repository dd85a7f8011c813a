"""Block masking: exact ratios, never padding, >= 1 visible, block structure, compact views."""

import pytest
import torch

from synthetic_batches import make_batch, tiny_config
from unimodal_free.objective.masking import MaskSpec, block_mask, compact, make_views, mask_spec, num_masked


def grid_coords(G: int, rows: int) -> torch.Tensor:
    gy, gx = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    c = torch.stack([(2 * gy + 1) / G - 1, (2 * gx + 1) / G - 1], -1).view(1, G * G, 2).float()
    return c.repeat(rows, 1, 1)  # (rows, G*G, 2)


def neighbour_agreement(mask: torch.Tensor, G: int) -> float:
    """Share of masked elements whose right/down neighbour is masked too."""
    m = mask.view(-1, G, G)
    pairs = torch.cat([(m[:, :, 1:] & m[:, :, :-1]).flatten(), (m[:, 1:] & m[:, :-1]).flatten()]).sum()
    return float(pairs) / float(torch.cat([m[:, :, :-1].flatten(), m[:, :-1].flatten()]).sum())


def runs(mask_row: torch.Tensor) -> int:
    m = mask_row.int()
    return int((m[1:] > m[:-1]).sum() + m[0])


@pytest.mark.parametrize("inverse,ratio", [(False, 0.5), (True, 0.8), (True, 0.6)])
def test_image_blocks_exact_ratio_and_clustered(inverse, ratio):
    G, rows = 8, 64
    coords = grid_coords(G, rows)
    padding = torch.zeros(rows, G * G, dtype=torch.bool)
    mask = block_mask(coords, padding, MaskSpec(ratio, 3, inverse), torch.Generator().manual_seed(0))
    assert (mask.sum(1) == round(ratio * G * G)).all()
    # Blocks: the masked (or, inverse, the kept) set is far more clustered than a random mask.
    region = ~mask if inverse else mask
    share = 1 - ratio if inverse else ratio
    assert neighbour_agreement(region, G) > share + 0.25


def test_spans_padding_and_min_visible():
    rows, M = 32, 40
    coords = torch.linspace(-1, 1, M).view(1, M, 1).repeat(rows, 1, 1)
    lengths = torch.randint(1, M + 1, (rows,), generator=torch.Generator().manual_seed(1))
    lengths[0] = 1  # a one-element row keeps its element
    padding = torch.arange(M)[None] >= lengths[:, None]
    # Re-normalise each row's coords to its own length, as the data package may do.
    coords = torch.where(padding[..., None], torch.zeros(()), coords)
    mask = block_mask(coords, padding, MaskSpec(0.5, 5, False), torch.Generator().manual_seed(2))
    assert not (mask & padding).any()
    assert mask.sum(1).tolist() == num_masked(lengths.tolist(), 0.5)
    assert ((~mask & ~padding).sum(1) >= 1).all()
    full = torch.zeros(1, M, dtype=torch.bool)
    span = block_mask(torch.linspace(-1, 1, M).view(1, M, 1), full, MaskSpec(0.5, 5, False),
                      torch.Generator().manual_seed(3))
    assert runs(span[0]) <= 20 // 5 + 2  # 20 masked in a few spans, not 20 singletons


def test_high_ratio_never_masks_everything():
    coords = torch.linspace(-1, 1, 3).view(1, 3, 1)
    mask = block_mask(coords, torch.zeros(1, 3, dtype=torch.bool), MaskSpec(0.99, 1, False),
                      torch.Generator().manual_seed(0))
    assert int(mask.sum()) == 2


def test_seeded_determinism():
    cfg = tiny_config()
    batch = make_batch(cfg, seed=0, pairs=6)
    part, spec = batch.parts["speech"], mask_spec(cfg.masking, "speech")
    a = make_views(part, spec, 3, torch.Generator().manual_seed(5)).mask
    b = make_views(part, spec, 3, torch.Generator().manual_seed(5)).mask
    c = make_views(part, spec, 3, torch.Generator().manual_seed(6)).mask
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # the R views of a row differ


@pytest.mark.parametrize("modality", ["image", "speech", "text"])
def test_views_are_compact_and_exact(modality):
    cfg = tiny_config()
    part = make_batch(cfg, seed=1, pairs=5).parts[modality]
    R = 3
    v = make_views(part, mask_spec(cfg.masking, modality), R, torch.Generator().manual_seed(0))
    assert v.rows == part.rows * R
    for r in range(v.rows):
        src = r // R
        visible = (~v.mask[r] & ~part.padding[src]).nonzero().squeeze(1)
        n = len(visible)
        assert (~v.padding[r]).sum() == n and not v.padding[r, :n].any()
        assert torch.equal(v.values[r, :n], part.values[src, visible])
        assert torch.equal(v.coords[r, :n], part.coords[src, visible])
        masked = v.mask[r].nonzero().squeeze(1)
        t = len(masked)
        assert torch.equal(v.target_index[r, :t], masked) and not v.target_padding[r, :t].any()
        assert v.target_padding[r, t:].all()
        assert torch.equal(v.target_coords[r, :t], part.coords[src, masked])
    assert v.values.shape[1] < part.values.shape[1]  # the student's input really shrinks


def test_compact_orders_and_pads():
    select = torch.tensor([[True, False, True, False], [False, False, False, True]])
    index, padding = compact(select, [2, 1])
    assert index[0].tolist() == [0, 2] and index[1, 0] == 3
    assert padding.tolist() == [[False, False], [False, True]]


def test_errors_name_the_problem():
    cfg = tiny_config()
    with pytest.raises(ValueError, match="'video'"):
        mask_spec(cfg.masking, "video")
    cfg.masking.speech_span = 0
    with pytest.raises(ValueError, match="speech"):
        mask_spec(cfg.masking, "speech")
    with pytest.raises(ValueError, match="no elements"):
        block_mask(torch.zeros(1, 2, 1), torch.ones(1, 2, dtype=torch.bool), MaskSpec(0.5, 1, False),
                   torch.Generator())


def box_mask_reference(coords, padding, spec, generator):
    """The definition in coordinate space, brute force over every (element, block) pair: O(M * K)."""
    import math

    B, M, Dc = coords.shape
    real = ~padding
    num_real = real.sum(1)
    n_mask = torch.tensor(num_masked(num_real.tolist(), spec.ratio), dtype=torch.long)
    n_select = num_real - n_mask if spec.inverse else n_mask
    big = torch.finfo(coords.dtype).max
    lo = coords.masked_fill(padding[..., None], big).amin(1)
    hi = coords.masked_fill(padding[..., None], -big).amax(1)
    side = torch.round(num_real.to(coords.dtype) ** (1.0 / Dc))
    spacing = (hi - lo) / (side - 1).clamp(min=1)[:, None]
    spacing = torch.where(spacing > 0, spacing, torch.ones_like(spacing))
    before = (spec.block // 2 + 0.5) * spacing
    after = (spec.block - 1 - spec.block // 2 + 0.5) * spacing
    K = max(1, math.ceil(2 * int(n_select.max()) / spec.block ** Dc) + 1)
    centre_idx = torch.multinomial(real.float(), K, replacement=True, generator=generator)
    centres = coords.gather(1, centre_idx[..., None].expand(-1, -1, Dc))
    delta = coords[:, :, None, :] - centres[:, None, :, :]  # (B, M, K, Dc)
    eps = 1e-4 * spacing[:, None, None, :]
    covered = ((delta > -before[:, None, None, :] + eps) & (delta < after[:, None, None, :] - eps)).all(-1)
    first = torch.where(covered, torch.arange(K), K).amin(-1).to(coords.dtype)
    key = (first + torch.rand(B, M, generator=generator)).masked_fill(padding, 2.0 * K + 2.0)
    rank = torch.empty_like(key, dtype=torch.long).scatter_(1, key.argsort(1), torch.arange(M).expand(B, M))
    selected = rank < n_select[:, None]
    return (real & ~selected) if spec.inverse else selected


@pytest.mark.parametrize("block,inverse", [(1, False), (2, False), (3, True), (4, False), (5, True)])
def test_grid_scatter_equals_the_box_definition(block, inverse):
    """On grid coordinates (what the data package makes) the linear-time mask is the brute-force one,
    draw for draw: images of several sizes in one batch, and padded spans."""
    rows = 12
    sides = torch.tensor([8, 8, 5, 3, 8, 6, 7, 8, 2, 4, 8, 1])
    G = int(sides.max())
    coords = torch.zeros(rows, G * G, 2)
    padding = torch.ones(rows, G * G, dtype=torch.bool)
    for r, s in enumerate(sides.tolist()):
        coords[r, : s * s] = grid_coords(s, 1)[0] * (0.5 + r / rows)  # each row its own scale
        padding[r, : s * s] = False
    for ratio in (0.3, 0.6, 0.8):
        spec = MaskSpec(ratio, block, inverse)
        got = block_mask(coords, padding, spec, torch.Generator().manual_seed(7))
        want = box_mask_reference(coords, padding, spec, torch.Generator().manual_seed(7))
        assert torch.equal(got, want), (block, inverse, ratio)
    M = 300
    lengths = torch.randint(1, M + 1, (rows,), generator=torch.Generator().manual_seed(4))
    span_padding = torch.arange(M)[None] >= lengths[:, None]
    span_coords = (torch.arange(M) * 0.01 - 1.0).view(1, M, 1).repeat(rows, 1, 1)
    spec = MaskSpec(0.5, block, inverse)
    got = block_mask(span_coords, span_padding, spec, torch.Generator().manual_seed(8))
    want = box_mask_reference(span_coords, span_padding, spec, torch.Generator().manual_seed(8))
    assert torch.equal(got, want)
