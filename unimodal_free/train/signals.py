"""Graceful stop on SIGTERM/SIGINT: the handler only sets a flag.

The trainer reads the flag at a step boundary and all ranks agree on it
through one all-reduce, so a signal delivered to a single rank still stops
every rank at the same step (with a checkpoint).

A rank can wait for its next batch for a long time (a stalled source, a source
that decodes nothing), and the step boundary never comes. So inside
:meth:`StopRequest.waiting_for_data` a stop request gives the batch
``DATA_WAIT_GRACE_S`` to arrive (it usually does: the step then ends and saves
as usual); after that :class:`StopWhileWaiting` is raised out of the wait.
"""

from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Iterator, Optional

# Long enough for a batch that is merely slow (prefetched batches come at once), short
# enough to leave most of a scheduler's SIGTERM-to-SIGKILL window (SLURM: 30 s) unused.
DATA_WAIT_GRACE_S = 10.0


class StopWhileWaiting(Exception):
    """A stop signal arrived and no batch came within the grace period: stop now, without a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}: no batch within {DATA_WAIT_GRACE_S:g} s of the stop request")
        self.signum = signum


class StopRequest:
    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
        self.signum: Optional[int] = None
        self._previous = {}
        self._signals = signals
        self._waiting = False

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            # Second Ctrl-C: the user really wants out now.
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            if self._waiting:
                signal.setitimer(signal.ITIMER_REAL, DATA_WAIT_GRACE_S)

    def _alarm(self, signum: int, frame: Optional[FrameType]) -> None:
        if self._waiting and self.signum is not None:
            raise StopWhileWaiting(self.signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def waiting_for_data(self) -> Iterator[None]:
        """Wrap a wait for data: a stop request inside it ends the wait after the grace period."""
        self._waiting = True
        if self.requested:
            signal.setitimer(signal.ITIMER_REAL, DATA_WAIT_GRACE_S)
        try:
            yield
        finally:
            self._waiting = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def __enter__(self) -> "StopRequest":
        for s in (*self._signals, signal.SIGALRM):
            self._previous[s] = signal.signal(s, self._alarm if s == signal.SIGALRM else self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
