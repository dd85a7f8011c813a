"""Text tokenizers: a sentencepiece model, or plain UTF-8 bytes.

    python -m unimodal_free.data.reading.tokenizer train --input SHARDS_OR_TEXT [...] --vocab-size N --output PREFIX

writes ``PREFIX.model`` (and a readable ``PREFIX.vocab``). Inputs are tar shards
(their ``.txt`` members, one sentence per line, read by the training reader with its
caps), text files (read line by line, at most MAX_LINE_BYTES a line), folders or globs;
at most ``--max-text-bytes`` of sentences are used. A line, sample or shard that cannot
be read (not UTF-8, a broken shard, a FIFO) is skipped with one line and counted.

Training is deterministic: one thread, every sentence used in input order
(``num_threads=1``, ``input_sentence_size=0``, no shuffling), so the same corpus
gives a byte-identical ``.model``. BPE by default, not unigram: BPE merges are
exact pair counts and it fills the requested vocabulary, while sentencepiece's
unigram pruning stops short on small closed-vocabulary corpora (measured on the
demo captions: unigram returns 59 pieces whether asked for 64, 96 or 128, 18
tokens per 8.75-word caption; BPE at 128 gives 128 pieces, 10 tokens per
caption). ``--model-type unigram`` remains available for real corpora.
``hard_vocab_limit=False`` lets a tiny corpus return fewer pieces than asked.

Ids: sentencepiece reserves 0 = <unk>, 1 = <s>, 2 = </s>; ``encode`` adds no
BOS/EOS (the model sees the tokens only). Bytes mode: id = byte value, vocab
size exactly 256, no specials (padding is a mask in this project, not a token).

A run records ``Tokenizer.reference`` ({"kind", "path", "sha256"}); a checkpoint
loaded with a different tokenizer fails in :func:`check_tokenizer_compatible`.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import sentencepiece as spm

from unimodal_free.bounded_read import BoundedReadError, bounded_lines, open_bounded, read_bounded
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.media import BadMedia, decode_text
from unimodal_free.data.reading.tar_reader import SHARD_EXTS
from unimodal_free.usage import ArgumentParser, parse_size, usage_errors

BYTES_VOCAB = 256
WORD_START = "\u2581"  # sentencepiece's mark of a piece that starts a word
# A sentencepiece model of 256k pieces takes about 5 MB; a file far larger is not one (read whole).
MAX_MODEL_BYTES = 64 << 20


class TokenizerMismatchError(ValueError):
    """The tokenizer at hand is not the one a checkpoint / run was trained with."""


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Tokenizer:
    """Common interface: encode / decode / vocab_size / reference."""

    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    @property
    def reference(self) -> dict:
        raise NotImplementedError

    def unfamiliar_words(self, text: str) -> tuple[list[str], int]:
        """(the words of ``text`` this tokenizer never saw in training, how many words were judged).

        Only words of 2+ characters are judged. One is unfamiliar when a piece of it is ``<unk>`` or a byte
        fallback, or when it is spelled out in pieces of at most one character each (no learned fragment of it:
        "dog" under the demo's colour-and-shape vocabulary is d-o-g). A bytes tokenizer has no vocabulary to
        judge against: ([], 0)."""
        return [], 0

    def word_pieces(self, limit: int) -> list[str]:
        """Up to ``limit`` learned pieces that start a word (2+ characters), most frequent merge first, without
        those that only begin a longer one ("cir" of "circle"; "the" of "there" goes too): a glimpse of the caption
        vocabulary for a model card. A bytes tokenizer: []."""
        return []


class BytesTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255: no training, no unknowns, longer sequences."""

    vocab_size = BYTES_VOCAB

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    @property
    def reference(self) -> dict:
        return {"kind": "bytes", "path": None, "sha256": None}


class SentencePieceTokenizer(Tokenizer):
    """A trained sentencepiece model, loaded from the exact bytes its checksum covers."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path).expanduser().resolve()
        try:
            data = read_bounded(self.path, MAX_MODEL_BYTES, "tokenizer models")
        except BoundedReadError as e:
            error = FileNotFoundError if e.reason == "missing file" else ValueError
            raise error(f"tokenizer model {e}") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(data)
        except Exception as e:
            raise ValueError(f"tokenizer model {self.path}: not a sentencepiece model ({e})") from None
        self.vocab_size = int(self.sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    @property
    def reference(self) -> dict:
        return {"kind": "sentencepiece", "path": str(self.path), "sha256": self.sha256}

    def _learned(self, piece_id: int) -> bool:
        """A piece of 2+ characters (the word-start mark not counted) that is neither <unk> nor a byte fallback."""
        sp = self.sp
        return not (sp.is_unknown(piece_id) or sp.is_byte(piece_id) or sp.is_control(piece_id)) \
            and len(sp.id_to_piece(piece_id).lstrip(WORD_START)) >= 2

    def unfamiliar_words(self, text: str) -> tuple[list[str], int]:
        sp = self.sp
        words = [w for w in text.split() if len(w) >= 2]
        unfamiliar = []
        for word in words:
            ids = sp.encode(word, out_type=int)
            if any(sp.is_unknown(i) or sp.is_byte(i) for i in ids) or not any(self._learned(i) for i in ids):
                unfamiliar.append(word)
        return unfamiliar, len(words)

    def word_pieces(self, limit: int) -> list[str]:
        # Ids of a BPE model are in merge order, the most frequent pair first (unigram: by score, the same idea).
        pieces = (self.sp.id_to_piece(i) for i in range(self.vocab_size) if self._learned(i))
        # Letters, digits, ' and - only: a piece is the model file's, and the card is Markdown.
        starts = [p.lstrip(WORD_START) for p in pieces if re.fullmatch(WORD_START + r"[\w'-]+", p)]
        return [w for w in starts if not any(o != w and o.startswith(w) for o in starts)][:limit]


def load_tokenizer(spec: str) -> Tokenizer:
    """``"bytes"`` | path to a ``.model`` ("demo" is resolved to its path first: ``sources.tokenizer_spec``)."""
    if spec == "bytes":
        return BytesTokenizer()
    return SentencePieceTokenizer(spec)


def _describe(ref: dict) -> str:
    if ref.get("kind") == "bytes":
        return "bytes"
    sha = ref.get("sha256") or "?"
    return f"{ref.get('kind')} {ref.get('path')} (sha256 {sha[:16]})"


def check_tokenizer_compatible(expected_ref: dict, actual_ref: dict, what: str) -> None:
    """Same kind and (for sentencepiece) same model bytes; the path may differ. Raises one line."""
    same = expected_ref.get("kind") == actual_ref.get("kind") and (
        expected_ref.get("kind") == "bytes" or expected_ref.get("sha256") == actual_ref.get("sha256")
    )
    if not same:
        raise TokenizerMismatchError(
            f"{what}: tokenizer mismatch: expected {_describe(expected_ref)}, got {_describe(actual_ref)}"
        )


# ------------------------------------------------------------------------ training


def _input_files(spec: str) -> list[Path]:
    """Files named by an input; not only regular ones: a fifo or device among them is skipped, with its line."""
    p = Path(spec)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if not f.is_dir() and not f.name.startswith("."))
    if p.exists():
        return [p]
    matches = sorted(Path(f) for f in glob.glob(spec, recursive=True) if not Path(f).is_dir())
    if not matches:
        raise FileNotFoundError(f"tokenizer input {spec}: no such file, folder or glob match")
    return matches


# A sentence longer than this is no sentence (sentencepiece drops those over 4192 bytes itself);
# a longer line is stepped over in pieces, so a 2 GiB line of a sparse file never sits in memory.
MAX_LINE_BYTES = 64 << 10
# Text kept for training: sentencepiece holds every sentence several times over while it trains (the CLI
# on 100 MiB of text, 64 MiB of it used, vocabulary 8000, peaked at 405 MB; see docs/DATA.md); the rest of
# a larger input is left unread, with one line saying so. ``--max-text-bytes`` raises it.
MAX_TEXT_BYTES = 64 << 20


class TextBudget:
    """Bytes of sentences taken so far against ``limit``; ``full`` once the next one would cross it."""

    def __init__(self, limit: int):
        self.limit, self.used, self.full = limit, 0, False

    def take(self, sentence: str) -> bool:
        size = len(sentence.encode("utf-8")) + 1
        if self.used + size > self.limit:
            self.full = True
            return False
        self.used += size
        return True


def _sentences(lines: Iterable[tuple[int, Optional[bytes]]], where: str, counter) -> Iterator[str]:
    """Non-empty stripped lines; an undecodable or overlong line is skipped and counted as ``where:line``."""
    for lineno, line in lines:
        if line is None:
            counter.skip(f"{where}:{lineno}", f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        if not line.strip():
            continue
        try:
            yield decode_text(line)
        except BadMedia as e:
            counter.skip(f"{where}:{lineno}", str(e))


def _file_sentences(path: Path, counter) -> Iterator[str]:
    """A text file read line by line (a fifo, device or folder is skipped and counted, never opened for reading)."""
    try:
        f = open_bounded(path, None, "tokenizer input")
    except BoundedReadError as e:
        counter.skip(str(path), e.reason)
        return
    with f:
        yield from _sentences(bounded_lines(f, MAX_LINE_BYTES), str(path), counter)


def _shard_sentences(path: Path, counter) -> Iterator[str]:
    """The .txt members of a tar shard, read by the training reader (its caps; bad samples skipped and counted)."""
    from unimodal_free.config import DataConfig
    from unimodal_free.data.reading.samples import SKIP, read_shard

    for sample in read_shard(str(path), counter, DataConfig()):
        where = f"{path}:{sample['__key__']}"
        if SKIP in sample:
            counter.skip(where, sample[SKIP])
        elif "txt" in sample:
            yield from _sentences(bounded_lines(io.BytesIO(sample["txt"]), MAX_LINE_BYTES), where, counter)


def iter_sentences(inputs: Iterable[str], counter: Optional[SkipCounter] = None, max_text_bytes: int = MAX_TEXT_BYTES) -> Iterator[str]:
    """Non-empty lines of the .txt members of tar shards and of text files, in input order, up to
    ``max_text_bytes`` in all. What cannot be read is skipped and counted on ``counter`` (a SkipCounter)."""
    counter = counter if counter is not None else SkipCounter("tokenizer")
    budget = TextBudget(max_text_bytes)
    for spec in inputs:
        for path in _input_files(spec):
            if path.name == "sizes.json":
                continue
            shard = path.name.endswith(SHARD_EXTS)
            for sentence in (_shard_sentences if shard else _file_sentences)(path, counter):
                if not budget.take(sentence):
                    print(f"note: stopped in {path} after {budget.used} bytes of text (the --max-text-bytes limit "
                          f"is {max_text_bytes}); the rest of the input is not used", file=sys.stderr)
                    return
                yield sentence


def train_tokenizer(sentences: Iterable[str], vocab_size: int, output: Union[str, Path],
                    model_type: str = "bpe") -> Path:
    """Train sentencepiece deterministically; write ``output`` (.model) and its .vocab atomically."""
    output = Path(output)
    if output.suffix != ".model":
        output = output.with_name(output.name + ".model")
    sentences = list(sentences)
    if not sentences:
        raise ValueError(f"no text to train the tokenizer {output} on")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,  # small corpora: every character seen gets a piece, no <unk> for rare ones
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + f".tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, output)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))
    output.with_suffix(".vocab").write_text(vocab, encoding="utf-8")
    return output


@usage_errors(FileNotFoundError, ValueError)  # missing or undecodable input, nothing to train on
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m unimodal_free.data.reading.tokenizer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train a sentencepiece model from text shards or text files")
    tr.add_argument("--input", nargs="+", required=True, help="tar shards, text files, folders or globs")
    tr.add_argument("--vocab-size", type=int, required=True)
    tr.add_argument("--output", required=True, help="PREFIX: writes PREFIX.model and PREFIX.vocab")
    tr.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    tr.add_argument("--max-text-bytes", type=parse_size, default=MAX_TEXT_BYTES,
                    help=f"train on the first this many bytes of text (default {MAX_TEXT_BYTES >> 20}MiB); "
                         "sentencepiece's memory grows with it")
    args = ap.parse_args(argv)
    counter = SkipCounter("tokenizer")
    sentences = list(iter_sentences(args.input, counter, args.max_text_bytes))
    if not sentences:
        why = f"; {counter.count} skipped, {counter.reasons_line()}" if counter.count else ""
        raise ValueError(f"--input {' '.join(args.input)}: no text to train the tokenizer on{why}")
    try:
        out = train_tokenizer(sentences, args.vocab_size, args.output, args.model_type)
    except (FileNotFoundError, ValueError):
        raise
    except (OSError, RuntimeError) as e:  # writing the model failed, or sentencepiece did
        print(f"error: {e}", file=sys.stderr)
        return 1
    tok = SentencePieceTokenizer(out)
    print(f"wrote {out} (vocab {tok.vocab_size}, sha256 {tok.sha256[:16]}) from {len(sentences)} sentences; "
          f"skipped {counter.count} unreadable", file=sys.stderr)
    if tok.vocab_size < args.vocab_size:
        print(f"note: the vocabulary is {tok.vocab_size}, not the --vocab-size {args.vocab_size} asked for: the text "
              f"holds no more distinct pieces to learn (give more text for a larger vocabulary)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
