"""Per-rank RNG state as plain tensors/lists, so ``torch.load(weights_only=True)`` reads it back."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """torch (CPU + accelerator), numpy, python and the masking generator states."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_version, list(py_state), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["mask_generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        if "mask_generator" not in state:
            raise ValueError("checkpoint has no masking generator state")
        generator.set_state(state["mask_generator"])


def rank_seeds(seed: int, rank: int, step: int = 0) -> tuple[int, int]:
    """(seed_everything's seed, the masking generator's seed) of ``rank``. ``step`` > 0: the reseed of a resume on
    another number of ranks (step 0 gives a fresh run's seeds)."""
    offset = 2_654_435_761 * step
    return seed + 1_000_003 * (rank + 1) + offset, seed * 7919 + rank + offset


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
