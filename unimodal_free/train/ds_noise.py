"""DeepSpeed's start-up noise below warning level in the ranks, unless ``log.deepspeed_verbose``.

Every launch made each rank print lines that say nothing about the run
(DeepSpeed 0.19.8; docs/RUNS.md "Logs: plain lines, log.txt and DeepSpeed's own lines"):

* ``Setting accelerator to CPU ...``: DeepSpeed's logger, accelerator auto-detection
  (``deepspeed/accelerator/real_accelerator.py``) at the first ``get_accelerator()``;
* ``No CUDA runtime is found, using CUDA_HOME=...``: torch's ``torch.utils.cpp_extension``
  logger, when DeepSpeed's op builder imports it on a machine without CUDA;
* ``DeepSpeed ...shm_comm_op built successfully``: a bare ``print`` in
  ``deepspeed/comm/torch.py: build_shm_op`` inside ``init_distributed`` (CPU only);
* ``You are using ZeRO with an untested optimizer``: DeepSpeed's logger in the engine; torch
  AdamW is our choice (``zero_allow_untested_optimizer`` in train/ds_config.py).

The two loggers get a filter that demotes these records to INFO, so they show
only where the logger is set to INFO; DeepSpeed's real warnings pass unchanged.
Filters set on a logger before DeepSpeed creates it survive its set-up
(``LoggerFactory.create_logger`` sets the level and adds a handler, nothing
else), so this runs before ``import deepspeed``. With ``verbose`` nothing is
demoted and DeepSpeed's logger is set to INFO (its engine then says much more).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from typing import Iterator

LOGGER_NOISE = {
    "DeepSpeed": ("Setting accelerator to CPU", "You are using ZeRO with an untested optimizer"),
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}
PRINTED_NOISE = ("deepspeed_shm_comm_op built successfully",)


class _Demote(logging.Filter):
    def __init__(self, needles: tuple[str, ...]):
        super().__init__()
        self.needles = needles
        self.verbose = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno > logging.WARNING:
            return True
        message = record.getMessage()
        if not any(n in message for n in self.needles):
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def _filter(name: str) -> _Demote:
    logger = logging.getLogger(name)
    for f in logger.filters:
        if isinstance(f, _Demote):
            return f
    f = _Demote(LOGGER_NOISE[name])
    logger.addFilter(f)
    return f


def configure(verbose: bool) -> None:
    """Demote the noise (or, ``verbose``, let everything through with DeepSpeed's logger at INFO)."""
    for name in LOGGER_NOISE:
        _filter(name).verbose = verbose
    if verbose:
        from deepspeed.utils.logging import set_log_level_from_string

        set_log_level_from_string("info")


def is_verbose() -> bool:
    return _filter("DeepSpeed").verbose


@contextlib.contextmanager
def quiet_prints() -> Iterator[None]:
    """Drop DeepSpeed's known printed noise from ``print`` output inside; everything else passes, after."""
    if is_verbose():
        yield
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        kept = [line for line in captured.getvalue().splitlines(keepends=True)
                if not any(n in line for n in PRINTED_NOISE)]
        sys.stdout.write("".join(kept))
        sys.stdout.flush()
