"""Shard writer: raw corpora -> WebDataset tar shards.

    python -m unimodal_free.data.shards LAYOUT INPUT OUTPUT_DIR [--maxcount N] [--maxsize BYTES]

Layouts (what real corpora ship as):
  images       folder tree of images, caption in ``name.txt`` beside ``name.png/.jpg/.webp``
               (an image without a caption file becomes an image-only sample)
  librispeech  ``speaker/chapter/*.flac`` + ``speaker-chapter.trans.txt`` -> speech+text
  coco         captions JSON (``--images DIR``, default: the JSON's folder) -> image + all captions
  text         text file, folder or glob; one sample per non-empty line
  manifest     JSONL, one object per sample: {"key", "image", "speech", "text": str | {"path"},
               "pair", "split", ...extra metadata}; relative paths resolve against the manifest
               (any path is followed: use ``--root DIR`` for a manifest you did not write, so
               paths resolve against DIR and absolute paths, '..' and symlinks out are refused)

One sample = one ``__key__`` (``[A-Za-z0-9_-]``, unique) with ``.jpg/.png/.webp``,
``.flac/.wav/.ogg``, ``.txt`` and ``.json`` ({"pair", "split", ...}). Media bytes are
kept as they are once a full decode succeeds; only formats that shards do not carry
(BMP, GIF, MP3, AIFF, ...) are re-encoded losslessly (PNG / 16-bit FLAC). An input that
cannot be used is skipped with one stderr line naming it, and counted in the summary.
Only regular files are read (not devices or fifos), at most ``--max-input-bytes`` each (caption
files and text/manifest lines: 1 MiB); audio is validated block by block.
Exit status: 0 when at least one sample was written; 2 for a usage error (bad flag, missing input,
an output folder that already holds shards or cannot be written); 1 when nothing could be written.

Shard size limits: ``maxcount`` samples and ``maxsize`` bytes of tar file per shard
(a new shard starts before a sample that would cross either; a single sample larger
than ``maxsize`` gets a shard of its own). No empty shard is ever written.
"""

from __future__ import annotations

from argparse import ArgumentTypeError, RawDescriptionHelpFormatter
import codecs
import collections
import glob
import hashlib
import json
import math
import os
import re
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Union

from webdataset import TarWriter

from unimodal_free.data.media import (
    BadMedia,
    audio_to_flac,
    check_audio,
    decode_text,
    image_extension,
    open_image,
    to_png_bytes,
    SPEECH_FORMATS,
)
from unimodal_free.modalities import TABLE
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors

SHARD_PATTERN = "shard-%06d.tar"
SIZES_FILE = "sizes.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPEECH_SUFFIXES = (".flac", ".wav", ".ogg")
# Keys stay well under the 100-byte ustar name field once an extension is appended.
MAX_KEY_LEN = 80
# Fixed member mtime: the same inputs give byte-identical shards.
TAR_MTIME = 0
# Largest input file read into memory (--max-input-bytes): a 40-megapixel uncompressed image,
# hours of 16 kHz WAV; a 3 GB sparse file or a device is refused before it is read.
MAX_INPUT_BYTES = 256 << 20
# A caption file or one line of a text corpus / manifest: text, not a corpus in one sample.
MAX_TEXT_BYTES = 1 << 20

_BLOCK = 512
_RECORD = 512 * 20  # tarfile pads the archive to a multiple of this


class Skip(Exception):
    """One unusable input: ``where`` (file, or file:line) and why."""

    def __init__(self, where: Union[str, Path], reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = str(where), reason


@dataclass
class RawSample:
    """One sample as a layout finds it, before anything is read or validated."""

    key: str  # unsanitised (e.g. a relative path)
    image: Path | None = None
    speech: Path | None = None
    text: Union[str, Path, None] = None  # inline text or a text file
    captions: list[str] | None = None  # several captions (COCO): one per .txt line
    pair: str | None = None
    split: str | None = None
    meta: dict = field(default_factory=dict)
    where: str = ""  # what a skip names when no single file is at fault (manifest line)


# --------------------------------------------------------------------------- keys

_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_key(raw: str) -> str:
    """A WebDataset-safe key: no dots (they start the extension), no separators, no '..'."""
    key = _KEY_BAD.sub("_", raw).strip("_") or "sample"
    if len(key) > MAX_KEY_LEN:
        key = f"{key[:MAX_KEY_LEN - 13]}-{hashlib.sha1(raw.encode()).hexdigest()[:12]}"
    return key


class KeyMaker:
    """Sanitised keys made unique by a numeric suffix, in input order."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, raw: str) -> str:
        base = key = sanitize_key(raw)
        n = 0
        while key in self.used:
            n += 1
            key = f"{base}-{n}"
        self.used.add(key)
        return key


# ----------------------------------------------------------------------- samples


def _open_regular(path: Path, limit: int | None, mode: str = "rb", limit_name: str = "--max-input-bytes", **kw):
    """Open a regular file of at most ``limit`` bytes; anything else (device, fifo, folder, too big) is a Skip."""
    try:
        f = open(path, mode, **kw)
    except FileNotFoundError:
        raise Skip(path, "missing file") from None
    except OSError as e:
        raise Skip(path, f"cannot read: {e.strerror or e}") from None
    st = os.fstat(f.fileno())  # of what was opened, not of a name that may change under us
    reason = None
    if not stat.S_ISREG(st.st_mode):
        reason = "not a regular file"
    elif limit is not None and st.st_size > limit:
        reason = f"{st.st_size} bytes > the {limit}-byte limit ({limit_name})"
    if reason:
        f.close()
        raise Skip(path, reason)
    return f


def _read_file(path: Path, limit: int, limit_name: str = "--max-input-bytes") -> bytes:
    with _open_regular(path, limit, limit_name=limit_name) as f:
        try:
            data = f.read(limit + 1)  # a file that grew since the check still stops at the limit
        except OSError as e:
            raise Skip(path, f"cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise Skip(path, f"more than the {limit}-byte limit ({limit_name})")
    return data


def _image_entry(path: Path, limit: int) -> tuple[str, bytes]:
    data = _read_file(path, limit)
    try:
        img = open_image(data)
    except BadMedia as e:
        raise Skip(path, str(e)) from None
    ext = image_extension(img)
    return (ext, data) if ext else ("png", to_png_bytes(img))


def _speech_entry(path: Path, limit: int) -> tuple[str, bytes]:
    data = _read_file(path, limit)
    try:
        _, fmt = check_audio(data)  # decoded block by block: hours of audio in a small file stay cheap
        ext = SPEECH_FORMATS.get(fmt)
        return (ext, data) if ext else ("flac", audio_to_flac(data))
    except BadMedia as e:
        raise Skip(path, str(e)) from None


def _text_entry(raw: RawSample) -> str | None:
    if raw.captions is not None:
        caps = [" ".join(c.split()) for c in raw.captions]
        caps = [c for c in caps if c]
        raw.meta["captions"] = caps
        return "\n".join(caps) or None
    if isinstance(raw.text, Path):
        try:
            return decode_text(_read_file(raw.text, MAX_TEXT_BYTES, "caption files"))
        except BadMedia as e:
            raise Skip(raw.text, str(e)) from None
    if isinstance(raw.text, str):
        text = raw.text.strip()
        if not text:
            raise Skip(raw.where or raw.key, "text is empty")
        return text
    return None


def build_sample(raw: RawSample, key: str, default_split: str, max_input_bytes: int = MAX_INPUT_BYTES) -> dict:
    """Read and validate a raw sample -> a WebDataset sample dict (bytes values). Raises Skip."""
    sample: dict = {"__key__": key}
    if raw.image is not None:
        ext, data = _image_entry(raw.image, max_input_bytes)
        sample[ext] = data
    if raw.speech is not None:
        ext, data = _speech_entry(raw.speech, max_input_bytes)
        sample[ext] = data
    text = _text_entry(raw)
    if text is not None:
        sample["txt"] = text.encode("utf-8")
    if len(sample) == 1:
        raise Skip(raw.where or raw.key, "no image, speech or text")
    meta = dict(raw.meta)
    meta["pair"] = str(raw.pair) if raw.pair is not None else key
    meta["split"] = str(raw.split) if raw.split is not None else default_split
    # Declared so the reader can tell a sample that lost a member from one that never had it.
    meta["modalities"] = modalities_of(sample).split("+")
    sample["json"] = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return sample


def modalities_of(sample: dict) -> str:
    """'image+speech+text'-style label of a sample dict, for the summary."""
    exts = set(sample)
    return "+".join(m.name for m in TABLE if exts.intersection(m.extensions))


# ------------------------------------------------------------------------ writer


def _tar_bytes(sample: dict) -> int:
    """Bytes a sample occupies in a ustar archive: a header block per member + padded data."""
    return sum(_BLOCK + -(-len(v) // _BLOCK) * _BLOCK for k, v in sample.items() if k != "__key__")


class ShardSink:
    """Writes samples into ``OUT/shard-%06d.tar`` under maxcount/maxsize; sizes.json on close.

    Each shard is written as ``.tar.tmp`` and renamed when complete, so a crash never
    leaves a truncated shard under a shard name. Shards are opened lazily: no empty shard.
    """

    def __init__(self, out_dir: Union[str, Path], maxcount: int = 10000, maxsize: int = 10**9,
                 pattern: str = SHARD_PATTERN):
        if maxcount < 1:
            raise ValueError(f"maxcount must be >= 1, got {maxcount}")
        if maxsize < _RECORD:
            raise ValueError(f"maxsize must be >= {_RECORD} bytes (one tar record), got {maxsize}")
        self.out_dir = Path(out_dir)
        self.maxcount, self.maxsize, self.pattern = maxcount, maxsize, pattern
        self.sizes: dict[str, int] = {}
        self._writer: TarWriter | None = None
        self._file = None
        self._name = ""
        self._count = 0
        self._offset = 0  # tar bytes written to the current shard so far

    def _would_overflow(self, nbytes: int) -> bool:
        end = self._offset + nbytes + 2 * _BLOCK  # + end-of-archive blocks
        return -(-end // _RECORD) * _RECORD > self.maxsize

    def write(self, sample: dict) -> None:
        nbytes = _tar_bytes(sample)
        if self._writer is not None and (self._count >= self.maxcount or self._would_overflow(nbytes)):
            self._finish()
        if self._writer is None:
            self._open()
        self._writer.write(sample)
        self._count += 1
        self._offset += nbytes

    def _open(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._name = self.pattern % len(self.sizes)
        self._file = open(self.out_dir / (self._name + ".tmp"), "wb")
        self._writer = TarWriter(self._file, encoder=False, mtime=TAR_MTIME)
        self._count = self._offset = 0

    def _finish(self) -> None:
        self._writer.close()
        self._file.close()
        os.replace(self.out_dir / (self._name + ".tmp"), self.out_dir / self._name)
        self.sizes[self._name] = self._count
        self._writer = self._file = None

    def close(self) -> dict[str, int]:
        """Finish the last shard and write sizes.json ({shard file name: samples}); returns it."""
        if self._writer is not None:
            self._finish()
        if self.sizes:
            tmp = self.out_dir / (SIZES_FILE + ".tmp")
            tmp.write_text(json.dumps(self.sizes, indent=1) + "\n")
            os.replace(tmp, self.out_dir / SIZES_FILE)
        return self.sizes

    def __enter__(self) -> "ShardSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class WriteReport:
    written: int = 0
    skipped: int = 0
    shards: dict[str, int] = field(default_factory=dict)
    kinds: collections.Counter = field(default_factory=collections.Counter)

    def summary(self, out_dir: Union[str, Path]) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        return (f"wrote {self.written} samples ({kinds or 'none'}) in {len(self.shards)} shards "
                f"to {out_dir}; skipped {self.skipped} unusable inputs")


def write_shards(samples: Iterable[Union[RawSample, Skip]], out_dir: Union[str, Path], maxcount: int = 10000,
                 maxsize: int = 10**9, split: str = "train", log=None, progress: bool | None = None,
                 max_input_bytes: int = MAX_INPUT_BYTES) -> WriteReport:
    """Validate and write raw samples; skips are reported one line each on ``log`` (stderr)."""
    from tqdm import tqdm

    log = log or sys.stderr
    report = WriteReport()
    make_key = KeyMaker()
    bar = tqdm(samples, unit="sample", file=sys.stderr, disable=not progress if progress is not None else None,
               mininterval=1.0, desc="shards")
    with ShardSink(out_dir, maxcount, maxsize) as sink:
        for raw in bar:
            try:
                if isinstance(raw, Skip):
                    raise raw
                sample = build_sample(raw, make_key(raw.key), split, max_input_bytes)
            except Skip as s:
                report.skipped += 1
                bar.write(f"skip {s.where}: {s.reason}", file=log)
                continue
            sink.write(sample)
            report.written += 1
            report.kinds[modalities_of(sample)] += 1
    report.shards = dict(sink.sizes)
    return report


# ----------------------------------------------------------------------- layouts


def _sorted_files(root: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Regular, non-hidden files under root (recursively), in a stable order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or (suffixes and not name.lower().endswith(suffixes)):
                continue
            out.append(Path(dirpath) / name)
    return out


def _decode_text_file(path: Path) -> str:
    try:
        return decode_text(_read_file(path, MAX_INPUT_BYTES))
    except BadMedia as e:
        raise Skip(path, str(e)) from None


def iter_images(root: Path) -> Iterator[RawSample]:
    for img in _sorted_files(root, IMAGE_SUFFIXES):
        rel = img.relative_to(root).with_suffix("")
        cap = img.with_suffix(".txt")
        yield RawSample(key=str(rel), image=img, text=cap if cap.exists() else None,
                        meta={"source": str(img.relative_to(root))})


def iter_librispeech(root: Path) -> Iterator[Union[RawSample, Skip]]:
    for trans in _sorted_files(root, (".trans.txt",)):
        try:
            lines = _decode_text_file(trans).splitlines()
        except Skip as s:
            yield s
            continue
        for lineno, line in enumerate(lines, 1):
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            if len(parts) < 2:
                yield Skip(f"{trans}:{lineno}", "transcript line has an utterance id but no text")
                continue
            utt, text = parts
            audio = next((trans.parent / f"{utt}{s}" for s in SPEECH_SUFFIXES
                          if (trans.parent / f"{utt}{s}").exists()), trans.parent / f"{utt}.flac")
            meta = {"source": str(audio.relative_to(root))}
            ids = utt.split("-")
            if len(ids) == 3:
                meta.update(speaker=ids[0], chapter=ids[1])
            yield RawSample(key=utt, speech=audio, text=text, meta=meta, where=f"{trans}:{lineno}")


class LayoutError(ValueError):
    """The input as a whole is unusable (not a single sample): stop with this one-line message."""


def iter_coco(json_path: Path, images_dir: Path | None = None) -> Iterator[RawSample]:
    images_dir = images_dir or json_path.parent
    try:
        doc = json.loads(_read_file(json_path, MAX_INPUT_BYTES).decode("utf-8"))
        images, anns = doc["images"], doc.get("annotations", [])
    except Skip as e:
        raise LayoutError(str(e)) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LayoutError(f"{json_path}: not a COCO captions file ({type(e).__name__}: {e})") from None
    captions: dict = collections.defaultdict(list)
    for a in anns:
        if isinstance(a, dict) and "image_id" in a and isinstance(a.get("caption"), str):
            captions[a["image_id"]].append(a["caption"])
    for i, im in enumerate(images):
        if not isinstance(im, dict) or "file_name" not in im:
            yield Skip(f"{json_path}:images[{i}]", "image entry without file_name")
            continue
        name = str(im["file_name"])
        yield RawSample(key=str(Path(name).with_suffix("")), image=images_dir / name,
                        captions=captions.get(im.get("id"), []),
                        meta={"image_id": im.get("id"), "source": name})


def _text_paths(spec: str) -> tuple[list[Path], Path | None]:
    """Files named by a text input (file, folder or glob) and the root keys are relative to."""
    p = Path(spec)
    if p.is_dir():
        return _sorted_files(p), p
    if p.exists():
        return [p], None
    if any(c in spec for c in "*?["):
        return sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file()), None
    raise LayoutError(f"{spec}: no such file, folder or glob match")


def _check_utf8(path: Path) -> None:
    """Stream the whole file through a strict decoder so a bad file is refused before any line is used."""
    dec = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_regular(path, None) as f:
            pos = 0
            while chunk := f.read(1 << 20):
                try:
                    dec.decode(chunk)
                except UnicodeDecodeError as e:
                    raise Skip(path, f"text is not UTF-8 (byte {pos + e.start})") from None
                pos += len(chunk)
            try:
                dec.decode(b"", final=True)
            except UnicodeDecodeError:
                raise Skip(path, "text is not UTF-8 (truncated character at end)") from None
    except OSError as e:
        raise Skip(path, f"cannot read: {e.strerror or e}") from None


def _bounded_lines(f) -> Iterator[tuple[int, str | None]]:
    """(line number, line) of a text-mode file; a line over MAX_TEXT_BYTES characters comes as None
    (and is stepped over in bounded pieces: a 3 GB line never sits in memory)."""
    lineno = 0
    while line := f.readline(MAX_TEXT_BYTES + 1):
        lineno += 1
        if len(line) > MAX_TEXT_BYTES and not line.endswith("\n"):
            while (rest := f.readline(MAX_TEXT_BYTES)) and not rest.endswith("\n"):
                pass
            yield lineno, None
        else:
            yield lineno, line


def iter_text(spec: str) -> Iterator[Union[RawSample, Skip]]:
    files, root = _text_paths(spec)
    for path in files:
        try:
            _check_utf8(path)
        except Skip as s:
            yield s
            continue
        stem = str(path.relative_to(root).with_suffix("")) if root else path.stem
        n = 0
        with open(path, encoding="utf-8-sig") as f:
            for lineno, line in _bounded_lines(f):
                if line is None:
                    yield Skip(f"{path}:{lineno}", f"line longer than {MAX_TEXT_BYTES} characters")
                    continue
                line = line.strip()
                if not line:
                    continue
                if "\x00" in line:
                    yield Skip(f"{path}:{lineno}", "text contains NUL bytes")
                    continue
                n += 1
                yield RawSample(key=f"{stem}-{lineno:07d}", text=line, where=f"{path}:{lineno}")
        if n == 0:
            yield Skip(path, "text is empty")


_MANIFEST_FIELDS = ("key", "image", "speech", "text", "pair", "split")


def _confined(root: Path, value: str, where: str, field_name: str) -> Path:
    """``root / value`` when it stays inside ``root`` (no absolute path, no '..', no symlink out); else Skip."""
    rel = Path(value)
    if rel.is_absolute():
        raise Skip(where, f'"{field_name}": absolute path {value!r} refused under --root')
    if ".." in rel.parts:
        raise Skip(where, f'"{field_name}": ".." in {value!r} refused under --root')
    real = (root / rel).resolve()
    if not real.is_relative_to(root.resolve()):
        raise Skip(where, f'"{field_name}": {value!r} leaves --root {root} through a symlink')
    return real


def iter_manifest(path: Path, root: Path | None = None) -> Iterator[Union[RawSample, Skip]]:
    """Samples of a JSONL manifest. Paths resolve against the manifest's folder and may point
    anywhere; with ``root`` they resolve against it and must stay inside it (untrusted manifests)."""
    base = root or path.parent

    def resolve(value: str, where: str, field_name: str) -> Path:
        return _confined(root, value, where, field_name) if root is not None else base / value

    try:
        f = _open_regular(path, None, "r", encoding="utf-8")
    except Skip as e:
        raise LayoutError(f"{path}: cannot read manifest ({e.reason})") from None
    with f:
        for lineno, line in _bounded_lines(f):
            where = f"{path}:{lineno}"
            if line is None:
                yield Skip(where, f"line longer than {MAX_TEXT_BYTES} characters")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield Skip(where, f"invalid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                yield Skip(where, "manifest line is not a JSON object")
                continue
            raw = RawSample(key=str(obj.get("key") or f"{path.stem}-{lineno:07d}"), where=where,
                            pair=obj.get("pair"), split=obj.get("split"),
                            meta={k: v for k, v in obj.items() if k not in _MANIFEST_FIELDS})
            try:
                for field_name in ("image", "speech"):
                    v = obj.get(field_name)
                    if v is not None and not isinstance(v, str):
                        raise Skip(where, f'"{field_name}" must be a path string')
                    if v:
                        setattr(raw, field_name, resolve(v, where, field_name))
                text = obj.get("text")
                if isinstance(text, dict) and isinstance(text.get("path"), str):
                    raw.text = resolve(text["path"], where, "text")
                elif isinstance(text, str):
                    raw.text = text
                elif text is not None:
                    raise Skip(where, '"text" must be a string or {"path": ...}')
            except Skip as s:
                yield s
                continue
            yield raw


def iter_layout(layout: str, input_path: str, images_dir: str | None = None,
                root: str | None = None) -> Iterator[Union[RawSample, Skip]]:
    """The raw samples of INPUT read with a named layout (``root``: see iter_manifest)."""
    p = Path(input_path)
    if layout == "text":
        return iter_text(input_path)
    if layout == "coco":
        if not p.is_file():
            raise LayoutError(f"{p}: COCO captions JSON not found")
        return iter_coco(p, Path(images_dir) if images_dir else None)
    if layout == "manifest":
        if not p.is_file():
            raise LayoutError(f"{p}: manifest not found")
        if root is not None and not Path(root).is_dir():
            raise LayoutError(f"--root {root}: not a folder")
        return iter_manifest(p, Path(root) if root is not None else None)
    if not p.is_dir():
        raise LayoutError(f"{p}: {layout} layout needs a folder")
    return iter_images(p) if layout == "images" else iter_librispeech(p)


LAYOUTS = ("images", "librispeech", "coco", "text", "manifest")


def _parse_size(s: str) -> int:
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMG]i?B?|B)?\s*", s, re.IGNORECASE)
    try:
        number = float(m.group(1)) if m else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ArgumentTypeError(f"not a size: {s!r} (e.g. 500000000, 5e8, 500MB)")
    unit = (m.group(2) or "").upper().rstrip("B")
    mult = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}[unit]
    return int(number * mult)


def _output_problem(out: Path) -> str | None:
    """Why OUT cannot take shards (a file, not creatable, not writable), or None; creates the folder."""
    if out.exists() and not out.is_dir():
        return "exists and is not a folder"
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()  # the only sure test: root ignores permission bits
    except OSError as e:
        return f"cannot write there ({e.strerror or e})"
    return None


@usage_errors(LayoutError)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m unimodal_free.data.shards",
                        description="Write WebDataset tar shards from raw image/speech/text corpora.",
                        epilog=__doc__[__doc__.index("Layouts"):], formatter_class=RawDescriptionHelpFormatter)
    ap.add_argument("layout", choices=LAYOUTS)
    ap.add_argument("input", help="folder, file, glob or manifest (see layout)")
    ap.add_argument("output_dir")
    ap.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default 10000)")
    ap.add_argument("--maxsize", type=_parse_size, default=10**9, help="bytes per shard file (default 1GB)")
    ap.add_argument("--split", default="train", help='"split" metadata when the input has none (default train)')
    ap.add_argument("--images", default=None, help="coco: image folder (default: the JSON's folder)")
    ap.add_argument("--root", default=None,
                    help="manifest: resolve its paths against ROOT and refuse any that leave it (absolute, '..', "
                         "symlinks out); use it for manifests you did not write")
    ap.add_argument("--max-input-bytes", type=_parse_size, default=MAX_INPUT_BYTES,
                    help=f"largest input file read into memory (default {MAX_INPUT_BYTES >> 20}MiB); "
                         "larger files, devices and other non-regular files are skipped")
    args = ap.parse_args(argv)
    if args.maxcount < 1:
        ap.error(f"--maxcount must be >= 1, got {args.maxcount}")
    if args.maxsize < _RECORD:
        ap.error(f"--maxsize must be >= {_RECORD} bytes (one tar record), got {args.maxsize}")

    out = Path(args.output_dir)
    if out.is_dir() and (any(out.glob("shard-*.tar")) or (out / SIZES_FILE).exists()):
        raise UsageError(f"{out} already holds shards; write into an empty folder")
    problem = _output_problem(out)
    if problem:
        raise UsageError(f"output folder {out}: {problem}")
    if args.root is not None and args.layout != "manifest":
        raise UsageError("--root applies to the manifest layout only")
    try:
        samples = iter_layout(args.layout, args.input, args.images, args.root)
        report = write_shards(samples, out, args.maxcount, args.maxsize, split=args.split,
                              max_input_bytes=args.max_input_bytes)
    except OSError as e:  # e.g. the disk filled up while writing: exit 1
        print(f"error: {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(report.summary(out), file=sys.stderr)
    return 0 if report.written > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
