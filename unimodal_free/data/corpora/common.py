"""What the small corpus builders share: their error, seeded per-item draws, share checks."""

from __future__ import annotations

import hashlib


class CorpusError(ValueError):
    """Unusable input; the message is one line naming the path or option."""


def draw(name: str, seed: int, what: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, what, name): the same choices whatever the listing order."""
    digest = hashlib.sha256(f"{seed}:{what}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_shares(**shares: float) -> None:
    """Each ``--flag`` share in [0, 1) (keyword names use ``_`` for ``-``); else CorpusError naming it."""
    for name, share in shares.items():
        if not 0.0 <= share < 1.0:
            raise CorpusError(f"--{name.replace('_', '-')}: must be a share in [0, 1), got {share}")
