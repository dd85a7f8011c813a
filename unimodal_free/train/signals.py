"""Graceful stop on SIGTERM/SIGINT: the handler only sets a flag.

The trainer reads the flag at a step boundary and all ranks agree on it
through one all-reduce, so a signal delivered to a single rank still stops
every rank at the same step (with a checkpoint).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Optional


class StopRequest:
    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.signum: Optional[int] = None
        self._previous = {}
        self._signals = signals

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            # Second Ctrl-C: the user really wants out now.
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        for s in self._signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
