"""Layouts: how real corpora ship, read as raw samples (or one :class:`Skip` per unusable input).

  images       folder tree of images, caption in ``name.txt`` and recording in ``name.flac/.wav/.ogg``
               beside ``name.png/.jpg/.webp``
               (``folder_label``: each image's top-level subfolder is its label, as in class folders)
  librispeech  ``speaker/chapter/*.flac`` + ``speaker-chapter.trans.txt`` -> speech+text, label "speaker"
  coco         captions JSON (``--images DIR``) -> image + all captions
  text         text file, folder or glob; one sample per non-empty line
  manifest     JSONL, one object per sample (see ``python -m unimodal_free.data.writing.shards --help``)
"""

from __future__ import annotations

import codecs
import collections
import glob
import json
import os
from pathlib import Path
from typing import Iterator, Union

from unimodal_free.bounded_read import bounded_lines
from unimodal_free.data.reading.labels import LABELS_KEY
from unimodal_free.data.reading.media import BadMedia, decode_text
from unimodal_free.data.writing.raw_samples import MAX_INPUT_BYTES, MAX_TEXT_BYTES, RawSample, Skip, open_regular, read_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPEECH_SUFFIXES = (".flac", ".wav", ".ogg")


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
        return decode_text(read_file(path, MAX_INPUT_BYTES))
    except BadMedia as e:
        raise Skip(path, str(e)) from None


def _same_named(path: Path, suffixes: tuple[str, ...]) -> Path | None:
    """The first existing ``path`` with one of ``suffixes`` in place of its own, or None."""
    return next((c for c in (path.with_suffix(s) for s in suffixes) if c.is_file()), None)


def iter_images(root: Path, folder_label: str | None = None) -> Iterator[Union[RawSample, Skip]]:
    """Images under root, each with the same-named ``.txt`` caption and ``.flac/.wav/.ogg`` recording
    beside it; with ``folder_label`` an image in ``root/CLASS/...`` gets the label {folder_label: CLASS}
    (class-per-subfolder corpora), one directly in ``root`` none. A recording with no same-named
    picture is one Skip naming it (the manifest layout takes recordings on their own)."""
    taken: set[Path] = set()
    for img in _sorted_files(root, IMAGE_SUFFIXES):
        rel = img.relative_to(root).with_suffix("")
        cap = img.with_suffix(".txt")
        speech = _same_named(img, SPEECH_SUFFIXES)
        taken.add(speech)
        label = {folder_label: rel.parts[0]} if folder_label and len(rel.parts) > 1 else None
        yield RawSample(key=str(rel), image=img, speech=speech, text=cap if cap.exists() else None,
                        meta={"source": str(img.relative_to(root))}, label=label)
    for audio in _sorted_files(root, SPEECH_SUFFIXES):
        if audio not in taken:
            yield Skip(audio, "recording with no same-named picture (the images layout pairs name.wav with "
                              "name.png; write a manifest to use recordings on their own)")


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
            audio = _same_named(trans.parent / f"{utt}.flac", SPEECH_SUFFIXES) or trans.parent / f"{utt}.flac"
            meta = {"source": str(audio.relative_to(root))}
            ids = utt.split("-")
            label = None
            if len(ids) == 3:
                meta.update(speaker=ids[0], chapter=ids[1])
                label = {"speaker": ids[0]}
            yield RawSample(key=utt, speech=audio, text=text, meta=meta, label=label, where=f"{trans}:{lineno}")


class LayoutError(ValueError):
    """The input as a whole is unusable (not a single sample): stop with this one-line message."""


def iter_coco(json_path: Path, images_dir: Path | None = None) -> Iterator[RawSample]:
    images_dir = images_dir or json_path.parent
    try:
        doc = json.loads(read_file(json_path, MAX_INPUT_BYTES).decode("utf-8"))
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
        with open_regular(path, None) as f:
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
        try:
            f = open_regular(path, None, "r", encoding="utf-8-sig")  # checked above; opened again without blocking
        except Skip as s:
            yield s
            continue
        with f:
            for lineno, line in bounded_lines(f, MAX_TEXT_BYTES):
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


_MANIFEST_FIELDS = ("key", "image", "speech", "text", "pair", "split", "label")


def confined(root: Path, value: str, where: str, field_name: str, root_name: str = "--root") -> Path:
    """``root / value`` when it stays inside ``root`` (no absolute path, no '..', no symlink out); else Skip.
    ``root_name`` is what messages call the root ("--root", "SRC", ...)."""
    rel = Path(value)
    if rel.is_absolute():
        raise Skip(where, f'"{field_name}": absolute path {value!r} refused under {root_name}')
    if ".." in rel.parts:
        raise Skip(where, f'"{field_name}": ".." in {value!r} refused under {root_name}')
    real = (root / rel).resolve()
    if not real.is_relative_to(root.resolve()):
        raise Skip(where, f'"{field_name}": {value!r} leaves {root_name} {root} through a symlink')
    return real


def iter_manifest(path: Path, root: Path | None = None) -> Iterator[Union[RawSample, Skip]]:
    """Samples of a JSONL manifest. Paths resolve against the manifest's folder and may point
    anywhere; with ``root`` they resolve against it and must stay inside it (untrusted manifests)."""
    base = root or path.parent

    def resolve(value: str, where: str, field_name: str) -> Path:
        return confined(root, value, where, field_name) if root is not None else base / value

    try:
        f = open_regular(path, None, "r", encoding="utf-8")
    except Skip as e:
        raise LayoutError(f"{path}: cannot read manifest ({e.reason})") from None
    with f:
        for lineno, line in bounded_lines(f, MAX_TEXT_BYTES):
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
            if LABELS_KEY in obj:  # the stored form: a manifest gives one "label" (a string or an object)
                yield Skip(where, f'"{LABELS_KEY}" is reserved: give the sample\'s labels as "label"')
                continue
            raw = RawSample(key=str(obj.get("key") or f"{path.stem}-{lineno:07d}"), where=where,
                            pair=obj.get("pair"), split=obj.get("split"), label=obj.get("label"),
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
                root: str | None = None, folder_label: str | None = None) -> Iterator[Union[RawSample, Skip]]:
    """The raw samples of INPUT read with a named layout (``root``: see iter_manifest, ``folder_label``:
    see iter_images)."""
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
    return iter_images(p, folder_label) if layout == "images" else iter_librispeech(p)


LAYOUTS = ("images", "librispeech", "coco", "text", "manifest")
