"""Shard writer: raw corpora -> WebDataset tar shards.

    python -m unimodal_free.data.writing.shards LAYOUT INPUT OUTPUT_DIR [--maxcount N] [--maxsize BYTES]

Layouts (what real corpora ship as):
  images       folder tree of images, caption in ``name.txt`` and recording in ``name.flac/.wav/.ogg``
               beside ``name.png/.jpg/.webp`` (an image without them becomes an image-only sample; a
               recording without a same-named image is skipped and counted: use manifest); with
               ``--folder-label FIELD`` an image under ``INPUT/CLASS/`` gets the label {FIELD: CLASS}
  librispeech  ``speaker/chapter/*.flac`` + ``speaker-chapter.trans.txt`` -> speech+text,
               labelled {"speaker": ID}
  coco         captions JSON (``--images DIR``, default: the JSON's folder) -> image + all captions
  text         text file, folder or glob; one sample per non-empty line
  manifest     JSONL, one object per sample: {"key", "image", "speech", "text": str | {"path"},
               "pair", "split", "label", ...extra metadata}; relative paths resolve against the manifest
               (any path is followed: use ``--root DIR`` for a manifest you did not write, so
               paths resolve against DIR and absolute paths, '..' and symlinks out are refused).
               "label" is a string (stored as field "label") or an object of named fields
               ({"shape": "circle", "colour": "red"}); values are strings of at most 200 characters
               (integers and booleans are written as strings); any other label skips the line

One sample = one ``__key__`` (``[A-Za-z0-9_-]``, unique) with ``.jpg/.png/.webp``,
``.flac/.wav/.ogg`` (several recordings: ``.0.flac``, ``.1.flac``, ...), ``.txt`` and ``.json`` ({"pair", "split", "labels": {field: value}, ...};
"labels" only for a labelled sample: probes and zero-shot eval read it, training does not). Media bytes are
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

import sys
import tempfile
from argparse import RawDescriptionHelpFormatter
from pathlib import Path

from unimodal_free.data.reading.labels import BadLabel, label_fields
from unimodal_free.data.writing.layouts import LAYOUTS, LayoutError, iter_layout
from unimodal_free.data.writing.raw_samples import MAX_INPUT_BYTES
from unimodal_free.data.writing.shard_writer import RECORD, SIZES_FILE, parse_size, write_shards
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors


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
    ap = ArgumentParser(prog="python -m unimodal_free.data.writing.shards",
                        description="Write WebDataset tar shards from raw image/speech/text corpora.",
                        epilog=__doc__[__doc__.index("Layouts"):], formatter_class=RawDescriptionHelpFormatter)
    ap.add_argument("layout", choices=LAYOUTS)
    ap.add_argument("input", help="folder, file, glob or manifest (see layout)")
    ap.add_argument("output_dir")
    ap.add_argument("--maxcount", type=int, default=10000, help="samples per shard (default 10000)")
    ap.add_argument("--maxsize", type=parse_size, default=10**9, help="bytes per shard file (default 1GB)")
    ap.add_argument("--split", default="train", help='"split" metadata when the input has none (default train)')
    ap.add_argument("--images", default=None, help="coco: image folder (default: the JSON's folder)")
    ap.add_argument("--root", default=None,
                    help="manifest: resolve its paths against ROOT and refuse any that leave it (absolute, '..', "
                         "symlinks out); use it for manifests you did not write")
    ap.add_argument("--folder-label", default=None, metavar="FIELD",
                    help="images: label each image with its top-level subfolder under INPUT (class folders), "
                         "stored as {FIELD: subfolder}")
    ap.add_argument("--max-input-bytes", type=parse_size, default=MAX_INPUT_BYTES,
                    help=f"largest input file read into memory (default {MAX_INPUT_BYTES >> 20}MiB); "
                         "larger files, devices and other non-regular files are skipped")
    args = ap.parse_args(argv)
    if args.maxcount < 1:
        ap.error(f"--maxcount must be >= 1, got {args.maxcount}")
    if args.maxsize < RECORD:
        ap.error(f"--maxsize must be >= {RECORD} bytes (one tar record), got {args.maxsize}")

    out = Path(args.output_dir)
    if out.is_dir() and (any(out.glob("shard-*.tar")) or (out / SIZES_FILE).exists()):
        raise UsageError(f"{out} already holds shards; write into an empty folder")
    problem = _output_problem(out)
    if problem:
        raise UsageError(f"output folder {out}: {problem}")
    if args.root is not None and args.layout != "manifest":
        raise UsageError("--root applies to the manifest layout only")
    if args.folder_label is not None and args.layout != "images":
        raise UsageError("--folder-label applies to the images layout only")
    if args.folder_label is not None:
        try:
            label_fields({args.folder_label: "class"})
        except BadLabel as e:
            raise UsageError(f"--folder-label: {e}") from None
    try:
        samples = iter_layout(args.layout, args.input, args.images, args.root, args.folder_label)
        report = write_shards(samples, out, args.maxcount, args.maxsize, split=args.split,
                              max_input_bytes=args.max_input_bytes)
    except OSError as e:  # e.g. the disk filled up while writing: exit 1
        print(f"error: {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(report.summary(out), file=sys.stderr)
    return 0 if report.written > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
