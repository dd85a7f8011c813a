"""Synthetic batches with the element counts real data has, for timing without decoding.

The counts follow the data config: images are (image_size/patch)^2 patches, speech
rows 30-100% of ``max_speech_seconds`` at 100 frames/s over ``frames_per_element``,
text 25-100% of ``max_text_tokens``. Rows come as image/speech/text triples of one
pair id, as split pairs arrive from the reader, so the alignment loss runs too.
"""

from __future__ import annotations

import torch

from unimodal_free.batch import Batch, Elements, ModalitySpec, collate_elements
from unimodal_free.config import DataConfig
from unimodal_free.modalities import MODALITIES

SYNTHETIC_VOCAB = 1000


def element_count_range(modality: str, data: DataConfig) -> tuple[int, int]:
    """(min, max) elements one sample of ``modality`` has under ``data``."""
    if modality == "image":
        n = (data.image_size // data.image_stride) ** 2
        return n, n
    if modality == "speech":
        n = max(1, int(data.max_speech_seconds * 100) // data.frames_per_element)
        return max(1, int(0.3 * n)), n
    if modality == "text":
        return max(1, data.max_text_tokens // 4), data.max_text_tokens
    raise ValueError(f"unknown modality {modality!r}")


def _coords(coord_dims: int, m: int) -> torch.Tensor:
    """Evenly spaced coords in [-1, 1]: a square-ish grid for 2-D coords (images), a line otherwise."""
    if coord_dims == 2:
        side = max(1, int(round(m**0.5)))
        idx = torch.arange(m)
        ys, xs = (idx // side).float(), (idx % side).float()
        rows = max(1, (m + side - 1) // side)
        return torch.stack([ys / max(rows - 1, 1), xs / max(side - 1, 1)], dim=-1) * 2 - 1  # (m, 2)
    return torch.linspace(-1, 1, m).unsqueeze(-1)  # (m, 1)


def synthetic_elements(spec: ModalitySpec, m: int, gen: torch.Generator) -> Elements:
    if spec.vocab_size:
        values = torch.randint(0, spec.vocab_size, (m,), generator=gen)
    else:
        values = torch.randn(m, spec.value_dim, generator=gen)
    return Elements(spec.name, values, _coords(spec.coord_dims, m))


def synthetic_batch(
    data: DataConfig,
    specs: dict[str, ModalitySpec],
    rows: int,
    seed: int = 0,
    modalities: tuple[str, ...] = MODALITIES,
    num_elements: int | None = None,
) -> Batch:
    """``rows`` rows cycling through ``modalities`` in pair groups.

    ``num_elements`` fixes every row's element count (scaling sweeps); otherwise
    counts are drawn from :func:`element_count_range`.
    """
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(rows):
        modality = modalities[i % len(modalities)]
        if num_elements is not None:
            m = num_elements
        else:
            lo, hi = element_count_range(modality, data)
            m = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        pair = f"pair{i // len(modalities)}" if len(modalities) > 1 else None
        samples.append((synthetic_elements(specs[modality], m, gen), f"s{i}", pair))
    return collate_elements(samples)
