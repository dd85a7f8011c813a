"""Open a shard URL for reading: local file, ``pipe:`` command or ``http(s)://`` (through curl).

Only a source string the user wrote is parsed as a URL. A name found on disk
(a glob match, a folder listing) is a :class:`LocalShard`, opened as a file
whatever it spells: a file called ``pipe:rm -rf ~ #.tar`` is data, not a command.

WebDataset's ``gopen`` reads a child's pipe with no timeout (a server that
accepts and never answers hangs the loader for good) and leaves the child
running when the reader is killed. Here a child's output is read with a
deadline per read (``timeout_s`` without a byte is a :class:`TimeoutError`:
the shard is skipped and counted), closing the stream kills the child's whole
process group, and the child is started with ``PR_SET_PDEATHSIG`` so the
kernel kills it when the reading process dies, even by SIGKILL.

``pipe:`` runs its command with ``/bin/sh`` (WebDataset's design): a source
string is a shell command, so never take one from someone you would not let
run commands on your machine. Other schemes (``s3:``, ``gs:``, ...) go to
WebDataset's ``gopen`` unchanged, without these guards.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
from typing import BinaryIO

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent(parent: int):
    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ChildStream:
    """The stdout of a child process, read with a per-read deadline; ``close`` kills the child's group."""

    def __init__(self, argv: list[str], what: str, timeout_s: float):
        self.what, self.timeout_s = what, timeout_s
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0,
            start_new_session=True,  # its own process group: close() reaches every process of a pipeline
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self._fd = self.proc.stdout.fileno()
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (fewer when that is what the child has sent so far); all of it for n < 0."""
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if self._eof:
            return b""
        ready, _, _ = select.select([self._fd], [], [], self.timeout_s)
        if not ready:
            raise TimeoutError(f"{self.what}: no data for {self.timeout_s:g} s (data.read_timeout_s)")
        data = os.read(self._fd, n)
        if not data:
            self._eof = True
            try:
                status = self.proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"{self.what}: closed its output but did not exit") from None
            if status != 0:
                raise OSError(f"{self.what}: exit status {status}")
        return data

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.stdout.close()
        self.proc.wait()

    def __enter__(self) -> "ChildStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalShard(str):
    """An absolute path to a shard file found on disk: :func:`open_shard` opens it as a file, never as a URL."""

    def __new__(cls, path: str) -> "LocalShard":
        return super().__new__(cls, os.path.abspath(path))


def open_shard(url: str, timeout_s: float) -> BinaryIO | ChildStream:
    """A readable binary stream of the shard at ``url`` (a :class:`LocalShard`, or a URL the user wrote)."""
    if isinstance(url, LocalShard):
        return open(url, "rb")
    if url.startswith("pipe:"):
        return ChildStream(["/bin/sh", "-c", url[len("pipe:"):]], url, timeout_s)
    if url.startswith(("http://", "https://")):
        t = f"{max(1, round(timeout_s))}"
        # --speed-limit/--speed-time: curl itself gives up on a transfer that stalls (below 1 B/s for t s).
        argv = ["curl", "--fail", "--silent", "--show-error", "--location", "--connect-timeout", t,
                "--speed-limit", "1", "--speed-time", t, url]
        return ChildStream(argv, url, timeout_s)
    if url.startswith("file:") or ":" not in url.split("/", 1)[0]:
        return open(url.removeprefix("file://").removeprefix("file:"), "rb")
    from webdataset.gopen import gopen

    return gopen(url, "rb")
