"""Deterministic synthetic paired batches for model/objective tests.

Every pair is generated from shared latent factors (a class c and a
continuous a), so image, speech and text rows of a pair carry the same
information and there is something to learn and to align:
image = class colour + stripes whose frequency follows a; speech = a mel
bump at a class-dependent band, modulated in time at a rate set by a; text
= class word, a word for quantised a, filler. Lengths vary, so sub-batches
have padding.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from unimodal_free.batch import Batch, Elements, ModalityBatch, collate_elements, modality_specs
from unimodal_free.config import load_config
from unimodal_free.objective.masking import MaskedView
from pathlib import Path

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.json"
VOCAB = 64
NUM_CLASSES = 8


def tiny_config(*overrides: str):
    return load_config(TINY, list(overrides))


def tiny_specs(cfg):
    return modality_specs(cfg.data, VOCAB)


def _linspace_coords(n: int) -> torch.Tensor:
    return torch.linspace(-1, 1, n).unsqueeze(-1) if n > 1 else torch.zeros(1, 1)


def image_elements(cfg, c: int, a: float, g: torch.Generator) -> Elements:
    S, p = cfg.data.image_size, cfg.data.patch_size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    colour = torch.tensor([(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1], dtype=torch.float32) * 0.6 + 0.2
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * (1 + 4 * a) * (xx + yy))  # (S, S)
    img = colour[:, None, None] * stripes + 0.05 * torch.randn(3, S, S, generator=g)  # (3, S, S)
    G = S // p
    patches = img.view(3, G, p, G, p).permute(1, 3, 2, 4, 0).reshape(G * G, p * p * 3)  # (G*G, p*p*3)
    gy, gx = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
    coords = torch.stack([(2 * gy + 1) / G - 1, (2 * gx + 1) / G - 1], -1).view(G * G, 2).float()
    return Elements("image", patches, coords)


def speech_elements(cfg, c: int, a: float, g: torch.Generator) -> Elements:
    n_mels, s = cfg.data.n_mels, cfg.data.frames_per_element
    M = int(torch.randint(8, 20, (1,), generator=g))
    t = torch.arange(M * s).float()
    band = (c + 0.5) * n_mels / NUM_CLASSES
    bump = torch.exp(-0.5 * ((torch.arange(n_mels) - band) / 1.5) ** 2)  # (n_mels,)
    env = 0.5 + 0.5 * torch.sin(2 * math.pi * t * (0.05 + 0.2 * a))  # (T,)
    frames = env[:, None] * bump[None, :] * 4 - 2 + 0.1 * torch.randn(M * s, n_mels, generator=g)  # (T, n_mels)
    return Elements("speech", frames.reshape(M, s * n_mels), _linspace_coords(M))


def text_elements(cfg, c: int, a: float, g: torch.Generator) -> Elements:
    M = int(torch.randint(4, 12, (1,), generator=g))
    filler = torch.randint(32, VOCAB, (M,), generator=g)
    ids = filler.clone()
    ids[0] = 1 + c  # class word
    ids[M // 2] = 16 + int(a * 8)  # word for a
    return Elements("text", ids, _linspace_coords(M))


MAKERS = {"image": image_elements, "speech": speech_elements, "text": text_elements}


def make_batch(cfg, seed: int, pairs: int = 6, modalities=("image", "speech", "text"), paired: bool = True) -> Batch:
    """``pairs`` samples per modality; with ``paired`` the k-th row of each modality shares factors and pair id."""
    return make_labelled_batch(cfg, seed, pairs, modalities, paired)[0]


def make_labelled_batch(cfg, seed: int, pairs: int = 6, modalities=("image", "speech", "text"),
                        paired: bool = True) -> tuple[Batch, dict[str, torch.Tensor]]:
    """As :func:`make_batch`, plus each row's class per modality (for probes)."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    labels = {name: [] for name in modalities}
    for k in range(pairs):
        c = int(torch.randint(0, NUM_CLASSES, (1,), generator=g))
        a = float(torch.rand(1, generator=g))
        for name in modalities:
            if not paired:
                c = int(torch.randint(0, NUM_CLASSES, (1,), generator=g))
                a = float(torch.rand(1, generator=g))
            labels[name].append(c)
            key = f"s{seed}_{k}_{name}"
            samples.append((MAKERS[name](cfg, c, a, g), key, f"p{seed}_{k}" if paired else None))
    return collate_elements(samples), {name: torch.tensor(v) for name, v in labels.items()}


def part_rows(part: ModalityBatch, lo: int, hi: int) -> ModalityBatch:
    """Rows lo..hi-1 of one modality's sub-batch (padding columns kept: the model ignores them)."""
    return ModalityBatch(part.values[lo:hi], part.coords[lo:hi], part.padding[lo:hi], part.pair_index[lo:hi],
                         part.keys[lo:hi], part.labels[lo:hi])


def view_rows(view: MaskedView, lo: int, hi: int) -> MaskedView:
    """The R masked views of rows lo..hi-1 (view rows lo*R..hi*R-1)."""
    R = view.num_views
    cut = {f.name: getattr(view, f.name)[lo * R:hi * R] for f in dataclasses.fields(view) if f.name != "num_views"}
    return MaskedView(**cut, num_views=R)
