"""fairseq's wav2vec manifests: ``NAME.tsv`` (+ ``NAME.wrd`` or ``NAME.ltr``) -> speech(+text) shards.

    python -m unimodal_free.data.corpora wav2vec-manifest manifests/ DST [--audio-root DIR]

The layout fairseq's ``examples/wav2vec/wav2vec_manifest.py`` writes (and ``libri_labels.py`` labels):
``train.tsv``, ``valid.tsv`` (any ``NAME.tsv``) whose first line is the audio root folder and every
further line ``relative/path.flac<TAB>num_frames``; ``NAME.wrd`` holds line by line the words of the
same recordings, ``NAME.ltr`` their letters (``H E L L O | W O R L D |``, ``|`` between words), used
when there is no ``.wrd``. A manifest whose name starts with ``train`` is written to train, every
other (valid, dev-*, test-*) to held-out. ``--audio-root`` replaces the root the manifests name (the
recordings moved). Paths are confined to the root: an absolute path, '..' or a link out of it stops
the conversion with one line naming the manifest line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Union

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import ConversionReport, inside, read_lines, write_conversion
from unimodal_free.data.writing.raw_samples import RawSample, Skip


def add_arguments(parser) -> None:
    parser.add_argument("--audio-root", type=Path, default=None,
                        help="folder the manifest paths are relative to (default: each .tsv's first line)")


def letters_to_words(line: str) -> str:
    """fairseq's letter labels -> the words: "H E Y | Y O U |" -> "HEY YOU"."""
    return " ".join("".join(line.split()).replace("|", " ").split())


def transcripts(tsv: Path, n: int, max_bytes: int) -> list[str] | None:
    """The ``n`` transcripts beside ``tsv`` (.wrd, else .ltr), or None when it has neither."""
    for suffix, clean in ((".wrd", lambda s: " ".join(s.split())), (".ltr", letters_to_words)):
        labels = tsv.with_suffix(suffix)
        if labels.exists():
            lines = read_lines(labels, max_bytes)
            if len(lines) != n:
                raise CorpusError(f"{labels}: {len(lines)} lines for the {n} recordings of {tsv}")
            return [clean(line) for line in lines]
    return None


def manifest_samples(tsv: Path, audio_root: Path | None, max_bytes: int) -> Iterator[Union[RawSample, Skip]]:
    lines = read_lines(tsv, max_bytes)
    if not lines:
        raise CorpusError(f"{tsv}: empty manifest (its first line is the audio root)")
    root = audio_root or Path(lines[0].strip())
    if not root.is_dir():
        raise CorpusError(f"{tsv}:1: audio root {str(root)!r} is not a folder (pass --audio-root)")
    entries = lines[1:]
    texts = transcripts(tsv, len(entries), max_bytes)
    split = "train" if tsv.stem.startswith("train") else "heldout"
    for i, line in enumerate(entries):
        where = f"{tsv}:{i + 2}"
        rel = line.split("\t")[0]
        if not rel.strip():
            yield Skip(where, "empty manifest line")
            continue
        audio = inside(root, rel, where, "the audio root")
        text = texts[i] if texts is not None else None
        if texts is not None and not text:
            text = None  # an empty transcript: the recording alone
        yield RawSample(key=f"{tsv.stem}/{Path(rel).with_suffix('')}", speech=audio, text=text, split=split,
                        meta={"source": rel, "manifest": tsv.name}, where=where)


def convert(src: Path, dst: Path, args) -> ConversionReport:
    tsvs = sorted(src.glob("*.tsv")) if src.is_dir() else [src]
    if not tsvs or not all(t.is_file() for t in tsvs):
        raise CorpusError(f"{src}: no fairseq manifest (.tsv) there")

    def samples() -> Iterator[Union[RawSample, Skip]]:
        for tsv in tsvs:
            yield from manifest_samples(tsv, args.audio_root, args.max_file_bytes)

    return write_conversion("wav2vec-manifest", samples(), dst, args.maxcount)
