"""Peak memory: of this process (RSS high-water mark on CPU, peak allocated on GPU) and of a step's tensors."""

from __future__ import annotations

import copy
import resource
import sys
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from unimodal_free.bench.ours import OursHarness
from unimodal_free.bench.synthetic import synthetic_batch


def peak_rss_bytes() -> int:
    """ru_maxrss of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize()
    except OSError:
        return peak_rss_bytes()


def peak_memory(device: torch.device) -> dict:
    out = {"peak_rss_bytes": peak_rss_bytes()}
    if device.type == "cuda":
        out["peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out


class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the ``with`` block and alive at the same time.

    Device-independent accounting of what a step allocates (activations kept
    for backward, gradients, temporaries that are tensors), so the CPU can
    measure what a GPU would hold: every op's outputs are seen through
    ``__torch_dispatch__`` and a storage counts until it is freed (weak
    reference callback), once however many views share it. Not seen: scratch
    memory inside a kernel and storages that existed before the block
    (parameters, optimizer state); ``torch.cuda.max_memory_allocated`` sees
    both. ``peak_bytes``/``current_bytes`` are for ``device_type`` only.
    """

    def __init__(self, device_type: str = "cpu"):
        super().__init__()
        self.device_type = device_type
        self.current_bytes = self.peak_bytes = 0
        self._seen = WeakIdKeyDictionary()  # storage -> (bytes, weakref with the free callback)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == self.device_type:
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        if storage in self._seen or storage.nbytes() == 0:
            return
        nbytes = storage.nbytes()
        self._seen[storage] = (nbytes, weakref.ref(storage, lambda _, n=nbytes: self._free(n)))
        self.current_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _free(self, nbytes: int) -> None:
        self.current_bytes -= nbytes


# (rows, views) measured for the fit; rows a multiple of 3 so every modality has the same share.
FIT_POINTS = ((3, 1), (3, 2), (6, 1))


def step_tensor_peak(harness, batch, cfg) -> int:
    """Peak bytes of the tensors one training step creates (the student task + backward), see :class:`LiveTensorPeak`."""
    harness.student.zero_grad(set_to_none=True)  # gradients are created (and counted) in the step
    with LiveTensorPeak(harness.device.type) as tracker:
        out = harness.loss(batch, cfg)
        out.loss.backward()
        del out
    return tracker.peak_bytes


def activation_memory(cfg, device: torch.device, precision: str, predict: tuple[int, int],
                      points: tuple[tuple[int, int], ...] = FIT_POINTS, seed: int = 0) -> dict:
    """Step tensor peak per row and per view, with and without ``model.activation_checkpointing``.

    peak(rows, R) = fixed + rows * (per_row + R * per_row_view), fitted exactly
    to three (rows, R) points on synthetic rows of every modality:
    ``per_row_view`` is what each masked view of a row holds (student latents
    through every block, cross-attention, predictions, targets, loss),
    ``per_row`` the teacher's share, ``fixed`` the gradients. ``predict``
    (rows, R) extrapolates the step's peak to a larger micro batch, e.g. the
    base config's 64 x 8 on a GPU; the device's own allocator adds its scratch
    memory and rounding on top (see :class:`LiveTensorPeak`).
    """
    out = {"points": [list(p) for p in points], "precision": precision, "device": str(device),
           "method": "LiveTensorPeak (TorchDispatchMode storage accounting) of the student task + backward, "
                     "peak = fixed + rows * (per_row + views * per_row_view) fitted to the points"}
    for on in (False, True):
        cfg_on = copy.deepcopy(cfg)
        cfg_on.model.activation_checkpointing = on
        harness = OursHarness(cfg_on, device, precision, seed=seed)
        peaks = []
        for rows, views in points:
            cfg_r = copy.deepcopy(cfg_on)
            cfg_r.objective.num_views = views
            batch = synthetic_batch(cfg.data, harness.specs, rows, seed=seed).to(device)
            peaks.append(step_tensor_peak(harness, batch, cfg_r))
        design = torch.tensor([[1.0, r, r * v] for r, v in points], dtype=torch.float64)
        fixed, per_row, per_row_view = torch.linalg.lstsq(design, torch.tensor(peaks, dtype=torch.float64)).solution.tolist()
        rows, views = predict
        out["checkpointing" if on else "no_checkpointing"] = {
            "peak_bytes": peaks, "fixed_bytes": fixed, "per_row_bytes": per_row, "per_row_view_bytes": per_row_view,
            "predicted": {"rows": rows, "views": views,
                          "peak_bytes": fixed + rows * (per_row + views * per_row_view)},
        }
        del harness
    return out
