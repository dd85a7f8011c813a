"""Skip-and-count error handling for the shard reader.

WebDataset's stock ``warn_and_continue`` sleeps 0.5 s per error and keeps no
count. At scale a few corrupt files per million are normal: the reader must
step over them at full speed and say how many it dropped, so a silently rotting
dataset shows up in TensorBoard (``train/skipped_samples``) rather than as a
slow, quiet loss of data. Only *data* errors are swallowed; bugs (TypeError in
our own code, KeyboardInterrupt...) are not handled here and still raise.
"""

from __future__ import annotations

import collections
import logging
import re
import time
from typing import Optional

log = logging.getLogger("unimodal_free.data")


class SkipCounter:
    """Counts skipped samples/shards and logs a rate-limited warning line for each.

    The first ``first_lines`` problems are each logged; after that at most one
    line per ``interval_s`` seconds, carrying how many were suppressed. The
    count itself is never rate-limited. ``handler`` has the signature WebDataset
    expects for ``handler=`` (return True = continue).

    ``in_row`` counts the skips since the last decoded sample (:meth:`decoded`)
    and ``reasons`` what they were, so a source that decodes nothing can be
    stopped with one line that says why.
    """

    def __init__(self, where: str = "reader", first_lines: int = 10, interval_s: float = 30.0):
        self.where = where
        self.count = 0
        self.first_lines = first_lines
        self.interval_s = interval_s
        self._last_log = float("-inf")
        self._suppressed = 0
        self.in_row = 0
        self.reasons: collections.Counter[str] = collections.Counter()

    def skip(self, what: str, reason: str, n: int = 1) -> None:
        """Record ``n`` skipped samples at ``what`` (shard URL and/or key) for ``reason``."""
        self.count += n
        self.in_row += n
        self.reasons[_reason_kind(reason)] += n
        now = time.monotonic()
        if self.count <= self.first_lines or now - self._last_log >= self.interval_s:
            extra = f" (+{self._suppressed} more since last warning)" if self._suppressed else ""
            log.warning("%s: skipped %s: %s [%d skipped so far]%s", self.where, what, reason, self.count, extra)
            self._last_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    def decoded(self) -> None:
        """A sample decoded: the run of skips (if any) is over."""
        if self.in_row:
            self.in_row = 0
            self.reasons.clear()

    def reasons_line(self, top: int = 3) -> str:
        """'skip reasons: 9990 x text: no tokens, 10 x image: ...' for the skips since the last decoded sample."""
        if not self.reasons:
            return "no sample was skipped"
        parts = [f"{n} x {kind}" for kind, n in self.reasons.most_common(top)]
        rest = sum(self.reasons.values()) - sum(n for _, n in self.reasons.most_common(top))
        return "skip reasons: " + ", ".join(parts) + (f", {rest} other" if rest else "")

    def handler(self, exn: BaseException) -> bool:
        """WebDataset ``handler=``: count the error and continue (no sleep, no reraise)."""
        args = [str(a) for a in getattr(exn, "args", ()) if a is not None]
        what = args[-1] if len(args) > 1 else "?"
        reason = f"{type(exn).__name__}: {args[0] if args else exn}"
        self.skip(what, reason)
        return True


class DeltaCounter:
    """Turns a running count into per-batch deltas (``Batch.skipped``)."""

    def __init__(self, counter: SkipCounter):
        self.counter = counter
        self._seen = counter.count

    def take(self) -> int:
        now = self.counter.count
        delta, self._seen = now - self._seen, now
        return delta


def _reason_kind(reason: str) -> str:
    """A reason without its particulars (numbers, text past the second colon): what skips are grouped by."""
    return re.sub(r"(?<![\w.-])\d+", "N", " ".join(":".join(reason.split(":")[:2]).split()))[:100]


def describe(exn: BaseException, limit: Optional[int] = 200) -> str:
    """One line for an exception: type and first message, truncated."""
    text = f"{type(exn).__name__}: {exn}".replace("\n", " ")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
