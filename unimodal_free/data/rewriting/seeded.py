"""Seeded per-item draws: choices fixed by (seed, what, name), so any listing order gives the same ones.

The split's held-out groups, the pairing's dropped pairs and the corpus builders' choices all draw here.
"""

from __future__ import annotations

import hashlib


def draw(name: str, seed: int, what: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, what, name): the same choices whatever the listing order."""
    digest = hashlib.sha256(f"{seed}:{what}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
