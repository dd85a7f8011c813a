"""What the small corpus builders share: their error and share checks (seeded draws: data/rewriting/seeded.py)."""

from __future__ import annotations


class CorpusError(ValueError):
    """Unusable input; the message is one line naming the path or option."""


def check_shares(**shares: float) -> None:
    """Each ``--flag`` share in [0, 1) (keyword names use ``_`` for ``-``); else CorpusError naming it."""
    for name, share in shares.items():
        if not 0.0 <= share < 1.0:
            raise CorpusError(f"--{name.replace('_', '-')}: must be a share in [0, 1), got {share}")
