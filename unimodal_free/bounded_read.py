"""Reading a file someone handed us at a cost its cap decides, not the file.

A path from outside (a run directory, a model folder, a caption file, a shard
writer's input) may name a FIFO (a plain ``open`` blocks forever), a device
(``/dev/zero`` never ends), a sparse file of gigabytes that occupies no disk,
or a link to any of these. Every small file the package reads from outside
goes through :func:`open_bounded`, which opens without blocking
(``O_NONBLOCK``), looks at what it opened (``fstat`` of the descriptor, not of
a name that may change), refuses anything but a regular file and any size over
the caller's cap, and never reads more than cap + 1 bytes, so a file that grows
while it is read is still refused. ``links=False`` adds ``O_NOFOLLOW`` for
files that this package writes itself and never as links (checkpoint
metadata). Errors are :class:`BoundedReadError`, one line naming the file and
the cap. A leaf: it imports nothing of the package, so any layer may use it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import IO, Any, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class BoundedReadError(ValueError):
    """A file refused or unreadable; ``reason`` says why (the message is ``path: reason``)."""

    def __init__(self, path: PathLike, reason: str):
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path, self.reason = os.fspath(path), reason


def open_bounded(path: PathLike, max_bytes: Optional[int], what: str, links: bool = True) -> IO[bytes]:
    """The regular file at ``path`` opened for binary reading; refused when it is anything else, when it
    is larger than ``max_bytes`` (None: any size, for callers that read in bounded pieces) or, with
    ``links=False``, when ``path`` itself is a symbolic link. ``what`` names the limit in messages."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BoundedReadError(path, "missing file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not links:
            raise BoundedReadError(path, f"a symbolic link, refused ({what} is read only from a regular file)") from None
        raise BoundedReadError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)  # what was opened, not a name that may change under us
        if not stat.S_ISREG(st.st_mode):
            raise BoundedReadError(path, "not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise BoundedReadError(path, f"{st.st_size} bytes > the {max_bytes}-byte limit ({what})")
        os.set_blocking(fd, True)  # a regular file: reads never block anyway; plain semantics from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: PathLike, max_bytes: int, what: str, links: bool = True) -> bytes:
    """The whole file, at most ``max_bytes`` (see :func:`open_bounded`)."""
    with open_bounded(path, max_bytes, what, links) as f:
        try:
            data = f.read(max_bytes + 1)  # a file that grew since the check still stops at the limit
        except OSError as exc:
            raise BoundedReadError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise BoundedReadError(path, f"more than the {max_bytes}-byte limit ({what})")
    return data


def read_text_bounded(path: PathLike, max_bytes: int, what: str, links: bool = True) -> str:
    """The file as UTF-8 text (a leading BOM dropped), at most ``max_bytes``."""
    data = read_bounded(path, max_bytes, what, links)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BoundedReadError(path, f"not UTF-8 text (byte {exc.start})") from None


def read_json_bounded(path: PathLike, max_bytes: int, what: str, links: bool = True) -> Any:
    """The file parsed as JSON, at most ``max_bytes``; nesting too deep to parse is refused like bad JSON."""
    text = read_text_bounded(path, max_bytes, what, links)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BoundedReadError(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise BoundedReadError(path, "not valid JSON (nested too deeply)") from None


def bounded_lines(f: IO, max_line: int) -> Iterator[tuple[int, Any]]:
    """(line number, line) of an open file, text or binary; a line longer than ``max_line`` (characters or
    bytes) comes as None and is stepped over in pieces of ``max_line``, so it never sits in memory whole."""
    lineno = 0
    while line := f.readline(max_line + 1):
        lineno += 1
        newline = "\n" if isinstance(line, str) else b"\n"
        if len(line) > max_line and not line.endswith(newline):
            while (rest := f.readline(max_line)) and not rest.endswith(newline):
                pass
            yield lineno, None
        else:
            yield lineno, line
