"""Writing into a run directory (or any output folder) without ever following a link found inside it.

A run directory may come from someone else (a copied or unpacked run resumed
with ``--resume auto``). A symbolic link planted there as ``log.txt``,
``config.json.tmp``, ``tb`` or ``checkpoints`` would make a plain ``open()``
append to, overwrite or fill a file outside it. Every file the trainer, the
export, the model folder and the eval JSON write goes through :class:`RunDir`:
each folder below the root is opened relative to its parent's descriptor with
``O_NOFOLLOW`` (a link there is refused, not followed), and each file is
created fresh with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a temporary name and
renamed into place (a rename replaces a name, it never writes through it).
The root itself is the user's choice and may be a link (a run directory on
another disk). Anything refused is a :class:`RunDirError`: one line naming the path.

:func:`preflight` checks a whole run directory before a run starts (CLI, before
any process group): creatable, writable, no link anywhere inside.

This module imports nothing of the package: the trainer and the eval CLI both use it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TextIO, Union

PathLike = Union[str, os.PathLike]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class RunDirError(Exception):
    """A path inside a run directory is a link, not a directory, or cannot be written; one line naming it."""


def _refusal(path: Path, what: str) -> RunDirError:
    return RunDirError(f"{path}: {what}; refusing to write through it (remove it, or write elsewhere)")


def _kind(dir_fd: int, name: str) -> str:
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except OSError:
        return "missing"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a file"
    return "not a regular file (a FIFO, socket or device)"


def file_mode() -> int:
    """0o666 less the process umask: what ``open()`` gives any new file (644 under umask 022)."""
    try:  # read, not set: setting it to read it back would race TensorBoard's writer thread
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)  # elsewhere: briefly the strictest value, never a looser one
    os.umask(umask)
    return 0o666 & ~umask


class RunDir:
    """Writes below ``root`` that never follow a link found inside it (see the module docstring)."""

    def __init__(self, root: PathLike):
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))

    def rel(self, path: PathLike) -> Path:
        """``path`` (as every path: relative ones to the working directory) relative to the root, which must hold it."""
        path = Path(os.fspath(path)).expanduser()
        rel = Path(os.path.relpath(os.path.abspath(path), self.root))
        if rel.parts and rel.parts[0] == "..":
            raise RunDirError(f"{path}: outside the run directory {self.root}")
        return rel

    # ------------------------------------------------------------------ folders
    @contextmanager
    def _folder(self, rel: Path, create: bool = True) -> Iterator[int]:
        """A descriptor of folder ``rel`` (made when missing and ``create``), opened one component at a time."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            here = self.root
            for part in rel.parts:
                here = here / part
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, dir_fd=fd)
                    except FileExistsError:  # made meanwhile (another rank): opened below like any folder
                        pass
                    child = self._open_child_dir(fd, part, here)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise _refusal(here, f"is {_kind(fd, part)}, not a directory") from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _open_child_dir(fd: int, part: str, here: Path) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _refusal(here, f"is {_kind(fd, part)}, not a directory") from None
            raise

    def makedirs(self, path: PathLike) -> Path:
        """Folder ``path`` and its parents below the root, each a real directory (made when missing)."""
        rel = self.rel(path)
        with self._folder(rel):
            pass
        return self.root / rel

    def fresh_dir(self, path: PathLike) -> Path:
        """An empty folder at ``path``: what was there before is removed first (a link only unlinked)."""
        self.remove(path)
        return self.makedirs(path)

    def remove(self, path: PathLike) -> None:
        """Remove ``path`` if present: a folder with its content, a file, or a link itself (never its target)."""
        rel = self.rel(path)
        try:
            with self._folder(rel.parent, create=False) as fd:
                kind = _kind(fd, rel.name)
                if kind == "a directory":
                    shutil.rmtree(rel.name, dir_fd=fd)  # descriptor-based: links inside are unlinked, not followed
                elif kind != "missing":
                    os.unlink(rel.name, dir_fd=fd)
        except FileNotFoundError:
            pass

    def check_no_links(self, path: PathLike) -> None:
        """Refuse a link anywhere in folder ``path`` (itself included); a missing folder passes."""
        rel = self.rel(path)
        try:
            with self._folder(rel, create=False):  # the folder itself, and every folder above it
                pass
        except FileNotFoundError:
            return
        for folder, dirs, files in os.walk(self.root / rel):  # never descends into a link
            for name in dirs + files:
                entry = Path(folder) / name
                if entry.is_symlink():
                    raise _refusal(entry, "is a symbolic link")

    # ------------------------------------------------------------------ files
    @contextmanager
    def _new_file(self, rel: Path) -> Iterator[tuple[int, str, BinaryIO]]:
        """(folder fd, temporary name, its binary file) created fresh beside ``rel``, renamed over it on success."""
        tmp = f".{rel.name}.tmp{os.getpid()}"
        with self._folder(rel.parent) as dir_fd:
            if _kind(dir_fd, tmp) not in ("missing", "a file"):
                raise _refusal(self.root / rel.parent / tmp, f"is {_kind(dir_fd, tmp)}")
            if _kind(dir_fd, tmp) == "a file":  # our own leftover of a crash under the same pid
                os.unlink(tmp, dir_fd=dir_fd)
            fd = os.open(tmp, _NEW_FILE_FLAGS, 0o666, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    yield dir_fd, tmp, f
                    f.flush()
                    os.fsync(f.fileno())
                if _kind(dir_fd, rel.name) not in ("missing", "a file"):
                    raise _refusal(self.root / rel, f"is {_kind(dir_fd, rel.name)}")
                os.replace(tmp, rel.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except OSError:
                    pass
                raise
            os.fsync(dir_fd)

    def write_atomic(self, path: PathLike, data: Union[bytes, str]) -> Path:
        """Replace ``path`` with ``data`` (text as UTF-8) atomically and durably."""
        rel = self.rel(path)
        with self._new_file(rel) as (_, _, f):
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        return self.root / rel

    def save_atomic(self, path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
        """Replace ``path`` with what ``write(file)`` writes into the fresh binary file (``torch.save(obj, f)``)."""
        rel = self.rel(path)
        with self._new_file(rel) as (_, _, f):
            write(f)
        return self.root / rel

    def save_atomic_by_name(self, path: PathLike, write: Callable[[str], None]) -> Path:
        """As :meth:`save_atomic` for a writer that takes a path (safetensors): it is handed the fresh file
        this process just created, named through the folder's descriptor (``/proc/self/fd``) where Linux has
        one. A writer that replaces the file by a rename of its own (safetensors does, creating it 600) is
        fine: what lies there afterwards must be a regular file, and gets the run's file mode."""
        rel = self.rel(path)
        with self._new_file(rel) as (dir_fd, tmp, _):
            proc = f"/proc/self/fd/{dir_fd}"
            write(f"{proc}/{tmp}" if os.path.isdir(proc) else str(self.root / rel.parent / tmp))
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise _refusal(self.root / rel.parent / tmp, "is not a regular file after writing")
                os.fchmod(fd, file_mode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return self.root / rel

    def open_append(self, path: PathLike) -> TextIO:
        """``path`` opened for appending text, line-buffered: a regular file with one name, or refused
        (a link, a FIFO that would block, a hard link to a file elsewhere)."""
        rel = self.rel(path)
        with self._folder(rel.parent) as dir_fd:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
            try:
                fd = os.open(rel.name, flags, 0o666, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                    raise _refusal(self.root / rel, f"is {_kind(dir_fd, rel.name)}") from None
                raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "a hard link (it has other names)" if stat.S_ISREG(st.st_mode) else "not a regular file"
            raise _refusal(self.root / rel, f"is {what}")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def replace(self, src: PathLike, dst: PathLike) -> None:
        """Rename ``src`` to ``dst`` within one folder (a rename moves names: it never follows a link)."""
        s, d = self.rel(src), self.rel(dst)
        if s.parent != d.parent:
            raise ValueError(f"RunDir.replace: {s} and {d} are in different folders")
        with self._folder(s.parent) as dir_fd:
            os.replace(s.name, d.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)


def preflight(run_dir: PathLike, key: str = "train.output_dir") -> Path:
    """Before a run starts: the run directory can be written (or made) and holds no link.

    A missing directory is not made here (a run that fails to start leaves nothing behind): its
    nearest existing ancestor must be a writable folder on a writable file system.
    Raises RunDirError, one line naming ``key`` and the path.
    """
    folder = RunDir(run_dir)
    if not os.path.lexists(folder.root):
        _check_creatable(folder.root, key)
        return folder.root
    try:
        probe = folder.write_atomic(folder.root / f".write-test-{os.getpid()}", b"")
        os.unlink(probe)
    except RunDirError:
        raise
    except OSError as exc:
        raise RunDirError(f"{key}: {folder.root}: cannot write there ({exc.strerror or exc})") from None
    folder.check_no_links(folder.root)
    return folder.root


def _check_creatable(root: Path, key: str) -> None:
    """``root`` does not exist: could ``mkdir -p`` make it? Judged on its nearest existing ancestor."""
    ancestor = root.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    why = None
    if not ancestor.is_dir():
        why = os.strerror(errno.ENOTDIR)
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        why = os.strerror(errno.EACCES)
    elif os.statvfs(ancestor).f_flag & os.ST_RDONLY:
        why = os.strerror(errno.EROFS)
    if why is not None:
        raise RunDirError(f"{key}: {root}: cannot write there ({why})")
