"""A rank under the ``deepspeed`` launcher stops cleanly when the launcher above it goes away.

DeepSpeed 0.19.8 starts a local run as three levels: the ``deepspeed`` runner
(``launcher/runner.py``) starts ``python -m deepspeed.launcher.launch`` with
``subprocess.Popen`` and waits on it, installing no signal handler for a
single-node run; ``launch.py`` starts one process per rank and, on
SIGINT/SIGTERM, terminates each rank's process tree (SIGTERM, SIGKILL after
30 s), and stops the rest when a rank exits non-zero. So SIGTERM to the
runner's PID alone ends the runner and nothing else: ``launch.py`` and the
ranks, orphaned, train on to the end. And a ``launch.py`` killed with SIGKILL
leaves its ranks running too.

:func:`follow_launcher` closes both gaps from the rank's side: the kernel
sends the rank SIGTERM when its parent (``launch.py``) dies
(``PR_SET_PDEATHSIG``), and a thread sends it SIGTERM when ``launch.py``'s
own parent (the runner) is gone (``launch.py`` is then re-parented). SIGTERM
is the trainer's ordinary stop request (train/signals.py): every rank stops
at the same step with a checkpoint and exits 0, and ``launch.py`` ends with them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Optional

LAUNCH_MODULE = "deepspeed.launcher.launch"
POLL_S = 1.0  # how often the runner is looked for: a stop a second late costs nothing
_PR_SET_PDEATHSIG = 1


def _parent_of(pid: int) -> int:
    """The parent PID of ``pid`` (Linux /proc); OSError when it is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[1])


def _is_launcher(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return LAUNCH_MODULE.encode() in f.read().replace(b"\0", b" ")
    except OSError:
        return False


def follow_launcher(signum: int = signal.SIGTERM) -> Optional[str]:
    """Under DeepSpeed's ``launch.py``: ask for a stop (``signum``) when it or the runner above it dies.

    Returns what is watched, or None when this process was not started by ``launch.py`` (plain ``python``,
    another launcher, not Linux).
    """
    launcher = os.getppid()
    if not _is_launcher(launcher):
        return None
    try:
        runner = _parent_of(launcher)
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return None
    if os.getppid() != launcher:  # it died before the kernel was told
        os.kill(os.getpid(), signum)

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            try:
                alive = _parent_of(launcher) == runner
            except (OSError, ValueError, IndexError):
                alive = False  # launch.py itself is gone (PR_SET_PDEATHSIG has said so already)
            if not alive:
                os.kill(os.getpid(), signum)
                return

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
    return f"launcher {launcher} (runner {runner})"
