"""Bucketing: a pool of decoded units -> batches of exactly B rows with little padding."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterator

from unimodal_free.batch import Batch, Row, collate_elements
from unimodal_free.data.reading.handlers import DeltaCounter, SkipCounter

# The batching pool holds this many batches' worth of rows to pick bucketed batches from.
POOL_BATCHES = 4


@dataclass
class _Sub:
    """Running state of one modality inside a batch being assembled."""

    rows: int = 0
    longest: int = 0
    bucket: int = -1


class Bucketer:
    """A pool of units (a sample's rows) that hands out B-row batches with little padding.

    The oldest unit seeds every batch (nothing waits longer than the pool
    turns over); then the unit whose rows add the least padding joins, ranked
    by (rows falling outside the batch's length bucket for their modality,
    padding slots added per row, age). A modality not yet in the batch costs
    nothing, so batches mix modalities, and a pair's rows join together, so
    the alignment loss sees them. Only when no unit fits the last free rows is
    one split (its other rows go back to the pool). No boundaries = FIFO.

    Units are grouped by signature (modality and length bucket of each row) and
    only the oldest unit of each group is scored, so a pick costs O(groups),
    not O(pool).
    """

    def __init__(self, boundaries: list[int], batch_rows: int):
        self.boundaries = sorted(boundaries)
        self.batch_rows = batch_rows
        self.groups: dict[tuple, list[tuple[int, list[Row]]]] = {}  # signature -> [(age, unit)] by age
        self.rows = 0
        self._age = 0

    def bucket(self, n: int) -> int:
        return bisect.bisect_left(self.boundaries, n)

    def _put(self, age: int, unit: list[Row]) -> None:
        sig = tuple((r.elements.modality, self.bucket(r.elements.num_elements)) for r in unit)
        bisect.insort(self.groups.setdefault(sig, []), (age, unit), key=lambda t: t[0])
        self.rows += len(unit)

    def add(self, unit: list[Row]) -> None:
        self._put(self._age, unit)
        self._age += 1

    def _cost(self, unit: list[Row], subs: dict[str, _Sub]) -> tuple[int, float]:
        outside, added = 0, 0
        for elements, *_ in unit:
            sub = subs.get(elements.modality)
            if sub is None:
                continue
            n = elements.num_elements
            outside += self.bucket(n) != sub.bucket
            added += sub.longest - n if n <= sub.longest else sub.rows * (n - sub.longest)
        return outside, added / len(unit)

    def take(self) -> list[Row]:
        """Remove and return one batch's rows (``batch_rows``, fewer only when the pool runs dry)."""
        batch: list[Row] = []
        subs: dict[str, _Sub] = {}
        while self.groups and len(batch) < self.batch_rows:
            free = self.batch_rows - len(batch)
            heads = [(g[0][0], sig) for sig, g in self.groups.items()]  # (age, signature) of each group's oldest
            if self.boundaries and batch:
                fitting = [h for h in heads if len(h[1]) <= free] or heads
                sig = min(fitting, key=lambda h: (*self._cost(self.groups[h[1]][0][1], subs), h[0]))[1]
            else:
                sig = min(heads)[1]
            age, unit = self.groups[sig].pop(0)
            if not self.groups[sig]:
                del self.groups[sig]
            self.rows -= len(unit)
            if len(unit) > free:  # split: the rest keeps its age and goes back to the pool
                unit, rest = unit[:free], unit[free:]
                self._put(age, rest)
            for row in unit:
                sub = subs.setdefault(row[0].modality, _Sub(bucket=self.bucket(row[0].num_elements)))
                sub.rows += 1
                sub.longest = max(sub.longest, row[0].num_elements)
                batch.append(row)
        return batch


def bucketed_batches(units: Iterator[list[Row]], bucketer: Bucketer, pool_rows: int,
                     counter: SkipCounter) -> Iterator[Batch]:
    """Pool units, emit bucketed batches; each Batch carries the skips since the previous one."""
    exhausted = False
    delta = DeltaCounter(counter)
    while True:
        while not exhausted and bucketer.rows < pool_rows:
            try:
                bucketer.add(next(units))
            except StopIteration:
                exhausted = True
        if not bucketer.rows:
            return
        batch = collate_elements(bucketer.take())
        batch.skipped = delta.take()
        yield batch

