"""One input sample as a layout finds it -> a validated WebDataset sample dict (bytes values).

Only regular files are read (not devices or fifos), at most ``--max-input-bytes`` each
(caption files and text/manifest lines: 1 MiB). Media bytes are kept as they are once a
full decode succeeds; only formats that shards do not carry (BMP, GIF, MP3, AIFF, ...)
are re-encoded losslessly (PNG / 16-bit FLAC). An unusable input raises :class:`Skip`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from unimodal_free.bounded_read import BoundedReadError, open_bounded, read_bounded
from unimodal_free.data.reading.labels import LABELS_KEY, BadLabel, label_fields
from unimodal_free.data.reading.media import (
    BadMedia,
    audio_to_flac,
    check_audio,
    decode_text,
    image_extension,
    open_image,
    to_png_bytes,
    SPEECH_FORMATS,
)
from unimodal_free.modalities import MAX_MEMBERS, TABLE, member_modality

# Keys stay well under the 100-byte ustar name field once an extension is appended.
MAX_KEY_LEN = 80
# Largest input file read into memory (--max-input-bytes): a 40-megapixel uncompressed image,
# hours of 16 kHz WAV; a 3 GB sparse file or a device is refused before it is read.
MAX_INPUT_BYTES = 256 << 20
# A caption file or one line of a text corpus / manifest: text, not a corpus in one sample.
MAX_TEXT_BYTES = 1 << 20


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
    recordings: list[Path] | None = None  # several recordings of one picture (SpokenCOCO): "0.flac", "1.flac", ...
    # Recordings left out of the written sample because they did not read or decode (the rest is kept).
    dropped: list[Skip] = field(default_factory=list)
    pair: str | None = None
    split: str | None = None
    meta: dict = field(default_factory=dict)
    label: object = None  # a string or {field: value} (see data/reading/labels.py); stored as json "labels"
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


def open_regular(path: Path, limit: int | None, mode: str = "rb", limit_name: str = "--max-input-bytes", **kw):
    """Open a regular file of at most ``limit`` bytes without blocking on a fifo (``bounded_read``);
    anything else (device, fifo, folder, too big) is a Skip. ``mode`` "r" gives a text file (``kw``: its encoding)."""
    try:
        f = open_bounded(path, limit, limit_name)
    except BoundedReadError as e:
        raise Skip(path, e.reason) from None
    return f if "b" in mode else io.TextIOWrapper(f, **kw)


def read_file(path: Path, limit: int, limit_name: str = "--max-input-bytes") -> bytes:
    try:
        return read_bounded(path, limit, limit_name)
    except BoundedReadError as e:
        raise Skip(path, e.reason) from None


def _image_entry(path: Path, limit: int) -> tuple[str, bytes]:
    data = read_file(path, limit)
    try:
        img = open_image(data)
    except BadMedia as e:
        raise Skip(path, str(e)) from None
    ext = image_extension(img)
    return (ext, data) if ext else ("png", to_png_bytes(img))


def _speech_entry(path: Path, limit: int) -> tuple[str, bytes]:
    data = read_file(path, limit)
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
            return decode_text(read_file(raw.text, MAX_TEXT_BYTES, "caption files"))
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
    try:
        labels = label_fields(raw.label)  # checked first: a bad label costs no media read
    except BadLabel as e:
        raise Skip(raw.where or raw.key, str(e)) from None
    sample: dict = {"__key__": key}
    if raw.image is not None:
        ext, data = _image_entry(raw.image, max_input_bytes)
        sample[ext] = data
    if raw.speech is not None:
        ext, data = _speech_entry(raw.speech, max_input_bytes)
        sample[ext] = data
    if raw.recordings and len(raw.recordings) > MAX_MEMBERS:
        raise Skip(raw.where or raw.key, f"{len(raw.recordings)} recordings, more than {MAX_MEMBERS} in one sample")
    if raw.recordings:  # one recording is stored as any other ("flac"); several as "0.flac", "1.flac", ...
        entries = []
        for path in raw.recordings:  # a bad recording costs itself, not the picture and the other captions
            try:
                entries.append(_speech_entry(path, max_input_bytes))
            except Skip as s:
                raw.dropped.append(s)
        for i, (ext, data) in enumerate(entries):
            sample[ext if len(entries) == 1 else f"{i}.{ext}"] = data
    text = _text_entry(raw)
    if text is not None:
        sample["txt"] = text.encode("utf-8")
    if len(sample) == 1:
        raise Skip(raw.where or raw.key, "no image, speech or text")
    meta = dict(raw.meta)
    if labels:
        meta[LABELS_KEY] = labels
    meta["pair"] = str(raw.pair) if raw.pair is not None else key
    meta["split"] = str(raw.split) if raw.split is not None else default_split
    # Declared so the reader can tell a sample that lost a member from one that never had it.
    meta["modalities"] = modalities_of(sample).split("+")
    sample["json"] = json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return sample


def modalities_of(sample: dict) -> str:
    """'image+speech+text'-style label of a sample dict, for the summary."""
    present = {member_modality(ext) for ext in sample if ext != "__key__"}
    return "+".join(m.name for m in TABLE if m.name in present)


def member_counts(sample: dict) -> dict[str, int]:
    """{modality: items the reader takes from the sample}: pictures, recordings, captions (non-blank .txt lines)."""
    counts: dict[str, int] = {}
    for ext, data in sample.items():
        modality = member_modality(ext) if ext != "__key__" else None
        if modality is not None:
            lines = sum(1 for line in data.split(b"\n") if line.strip()) if modality == "text" else 1
            counts[modality] = counts.get(modality, 0) + lines
    return counts
