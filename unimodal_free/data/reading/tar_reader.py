"""Tar shards read header by header, every size checked before anything reads the bytes it claims.

The one way shards are read (training, eval, the pairing tool, the tokenizer
trainer). Python's ``tarfile`` reads a GNU long-name/long-link record or a pax
header into memory whole before it hands back the member it describes, so a
2 MB ``.tar.gz`` whose header claims a 2 GiB long name costs gigabytes before
any caller sees a size. Here each 512-byte header is parsed from the raw
block (size in octal or base-256): a metadata record (``L``/``K``/``x``/``X``/
``g``) over :data:`MAX_RECORD_BYTES` and a member over the caller's cap raise
:class:`MemberTooLarge` before a byte of it is read. Gzip, bzip2 and xz are
recognised by their magic bytes, whatever the file is called, and inflated in
bounded pieces.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional

SHARD_EXTS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
BLOCK = 512
MAX_RECORD_BYTES = 1 << 20  # a long name, long link or pax header; real ones are a few hundred bytes
_CHUNK = 1 << 20  # unread data is stepped over in pieces of this size
_REGULAR = (b"0", b"\0", b"7")
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, folders, fifos: their size is not data
_PAX, _PAX_GLOBAL = (b"x", b"X"), b"g"
_GNU_NAME, _GNU_LINK, _GNU_SPARSE = b"L", b"K", b"S"
_MAGIC = ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")), (b"BZh", bz2.BZ2File),
          (b"\xfd7zXZ\x00", lzma.LZMAFile))


class ReadError(ValueError):
    """Not a tar stream, or a broken one (bad checksum, truncated, unsupported member type); tarfile's name."""


class MemberTooLarge(ReadError):
    """A header claims more bytes than allowed; ``name`` is None for a metadata record."""

    def __init__(self, name: Optional[str], size: int, cap: int, cap_name: str):
        self.name, self.size = name, size
        what = f"{name} has" if name is not None else "a tar long-name/pax record claims"
        super().__init__(f"{what} {size} bytes > {cap_name}={cap} (rest of the shard not read)")


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    regular: bool  # a file with data (not a folder, link or device)


def read_exact(stream, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the stream (``read`` may return short pieces)."""
    parts, got = [], 0
    while got < n and (piece := stream.read(n - got)):
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


class _Prefixed:
    """A stream with its first bytes (already read to sniff the format) put back in front."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.stream.read(), b""
            else:
                out, self.head = self.head[:n], self.head[n:]
            return out
        return self.stream.read(n)


def uncompressed(stream: BinaryIO):
    """The tar bytes of ``stream``: gzip, bzip2 and xz (sniffed from the first bytes) inflated in bounded pieces.

    ``tarfile``'s own stream inflater keeps up to ~1000x its read size in one buffer and copies it on
    every read (a highly compressed member took minutes to step over); the library file classes do not.
    """
    head = read_exact(stream, 6)
    prefixed = _Prefixed(head, stream)
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener(prefixed)
    return prefixed


def _number(field: bytes) -> int:
    """A numeric header field: octal text (NUL/space padded) or GNU base-256 (first byte 0x80 or 0xff)."""
    if field[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[:1] == b"\xff" else n
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise ReadError(f"bad number {bytes(field)!r} in a tar header") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - sum(256 for b in block[:148] + block[156:] if b > 127)
    return stored in (unsigned, signed)


def _pax_records(data: bytes) -> dict[str, str]:
    """'%d key=value\\n' records -> {key: value}."""
    out, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ReadError("bad pax record length") from None
        record = data[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ReadError("bad pax record")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class TarMembers:
    """Iterate the members of an uncompressed tar stream; :meth:`read` returns the current member's data.

    A member's data not read before the next step is stepped over in bounded pieces. A member
    (regular or not) whose size is over ``max_member_bytes`` raises :class:`MemberTooLarge`
    before it is read; ``cap_name`` is how the message names the cap.
    """

    def __init__(self, stream, max_member_bytes: int, cap_name: str = "data.max_member_bytes"):
        self.stream, self.cap, self.cap_name = stream, max_member_bytes, cap_name
        self._left = 0  # data + padding of the current member not read yet
        self._data_left = 0

    def _consume(self, n: int) -> bytes:
        data = read_exact(self.stream, n)
        if len(data) < n:
            raise ReadError("unexpected end of data (truncated tar)")
        return data

    def _skip(self) -> None:
        while self._left:
            step = min(self._left, _CHUNK)
            self._consume(step)
            self._left -= step
        self._data_left = 0

    def _start(self, size: int) -> None:
        self._data_left, self._left = size, -(-size // BLOCK) * BLOCK

    def read(self) -> bytes:
        """The data of the member last yielded (once)."""
        data = self._consume(self._data_left)
        self._left -= self._data_left
        self._data_left = 0
        return data

    def _record(self, size: int) -> bytes:
        """A metadata record's payload, refused over MAX_RECORD_BYTES before it is read."""
        if size > MAX_RECORD_BYTES:
            raise MemberTooLarge(None, size, MAX_RECORD_BYTES, "the tar record cap")
        self._start(size)
        data = self.read()
        self._skip()
        return data

    def __iter__(self) -> Iterator[Member]:
        long_name: Optional[str] = None
        pax: dict[str, str] = {}
        first = True
        while True:
            self._skip()
            block = read_exact(self.stream, BLOCK)
            if not block and not first:
                return  # the end-of-archive blocks are missing: tar itself accepts that
            if len(block) < BLOCK:
                raise ReadError("empty file" if not block else "truncated tar header")
            if block == bytes(BLOCK):
                return
            if not _checksum_ok(block):
                raise ReadError("bad tar header checksum" + (" (not a tar file?)" if first else ""))
            first = False
            kind, size = block[156:157], _number(block[124:136])
            if size < 0:
                raise ReadError(f"negative size {size} in a tar header")
            if kind == _GNU_NAME:
                long_name = _text(self._record(size))
                continue
            if kind == _GNU_LINK:
                self._record(size)
                continue
            if kind in _PAX:
                pax = _pax_records(self._record(size))
                continue
            if kind == _PAX_GLOBAL:
                self._record(size)
                continue
            if kind == _GNU_SPARSE:
                raise ReadError("GNU sparse members are not supported")
            name = _text(block[:100])
            if block[257:263] == b"ustar\0" and (prefix := _text(block[345:500])):
                name = prefix + "/" + name
            name = pax.get("path") or long_name or name
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise ReadError(f"{name}: bad pax size {pax['size'][:40]!r}") from None
            long_name, pax = None, {}
            if size > self.cap:
                raise MemberTooLarge(name, size, self.cap, self.cap_name)
            regular = kind in _REGULAR and not (kind == b"\0" and name.endswith("/"))
            self._start(0 if kind in _NO_DATA else size)
            yield Member(name, size, regular)
