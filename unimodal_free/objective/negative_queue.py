"""A queue of the EMA teacher's past alignment keys, extra InfoNCE negatives (``objective.negative_queue``).

Why: InfoNCE only pays for what tells a row from its batch's negatives. With
P pairs per step, a picture's negatives rarely share everything but one
attribute with it (its colour, size and place but not its shape), so that
attribute never has to be encoded. MoCo's answer (He et al. 2020; ALBEF's
image-text contrast, Li et al. 2021): score each student row against keys
from the slowly moving EMA teacher, the batch's and those of the last Q
steps' rows kept in a queue, for a (P, Q) matmul and no extra forward. The
keys must come from the teacher: a queue of the student's own past rows
(momentum 0) keeps keys made by many different encoders, and training fails
(MoCo's ablation; measured on the demo too: R@1 fell in every direction).

Every rank pushes the same all-rank keys (gathered by the alignment loss), so
every rank holds the same queue. The queue is training state, not model
state: it is not saved (a resumed run refills it within Q / rows-per-step
steps) and the model, its exports and the teacher never see it.
"""

from __future__ import annotations

import torch


class NegativeQueue:
    """Per modality, a ring of the last ``size`` pushed rows (A,), detached, on the rows' device."""

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError(f"negative queue: objective.negative_queue must be > 0, got {size}")
        self.size = size
        self._rows: dict[str, torch.Tensor] = {}  # modality -> (size, A)
        self._filled: dict[str, int] = {}  # valid rows (host-known: no device read back)
        self._next: dict[str, int] = {}  # ring position of the next write

    @torch.compiler.disable  # host counters: traced, every step's ring position would be a new graph
    def negatives(self, modality: str) -> torch.Tensor | None:
        """The stored rows (n, A), n <= size, in no particular order; None before the first push."""
        rows = self._rows.get(modality)
        if rows is None or self._filled[modality] == 0:
            return None
        return rows[: self._filled[modality]]

    @torch.compiler.disable
    @torch.no_grad()
    def push(self, modality: str, rows: torch.Tensor) -> None:
        """Append ``rows`` (n, A), dropping the oldest past ``size`` (of more than ``size`` new rows the last)."""
        rows = rows.detach()[-self.size :]  # (n, A), n <= size
        n = rows.shape[0]
        if n == 0:
            return
        store = self._rows.get(modality)
        if store is None or store.shape[1] != rows.shape[1] or store.device != rows.device:
            store = self._rows[modality] = rows.new_zeros(self.size, rows.shape[1])  # (size, A)
            self._filled[modality], self._next[modality] = 0, 0
        start = self._next[modality]
        slots = (torch.arange(n, device=rows.device) + start) % self.size  # (n,) ring positions
        # Out of place: this step's loss saved the old rows for its backward.
        self._rows[modality] = store.index_copy(0, slots, rows.to(store.dtype))
        self._next[modality] = (start + n) % self.size
        self._filled[modality] = min(self._filled[modality] + n, self.size)
