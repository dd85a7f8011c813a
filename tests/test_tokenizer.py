"""Tokenizers: real sentencepiece models trained here, references and mismatch errors."""

import hashlib
import pickle
import random
import shutil

import pytest

from unimodal_free.data.loading.sources import tokenizer_spec
from unimodal_free.data.writing import shards
from unimodal_free.data.reading.tokenizer import (
    BytesTokenizer,
    TokenizerMismatchError,
    check_tokenizer_compatible,
    iter_sentences,
    load_tokenizer,
    main,
    train_tokenizer,
)

WORDS = "a the small large red green blue circle square star at on top bottom left right of".split()


def corpus(n=400, seed=0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture
def text_shards(tmp_path):
    """Real text shards written by the shard writer (several shards)."""
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(corpus()) + "\n")
    out = tmp_path / "shards"
    assert shards.main(["text", str(src), str(out), "--maxcount", "150"]) == 0
    assert len(list(out.glob("*.tar"))) == 3
    return out


def test_train_from_shards_roundtrips_and_is_deterministic(tmp_path, text_shards):
    assert list(iter_sentences([str(text_shards)])) == corpus()  # .txt members in shard order
    p1 = train_tokenizer(iter_sentences([str(text_shards)]), 96, tmp_path / "a" / "tok")
    p2 = train_tokenizer(iter_sentences([str(text_shards / "*.tar")]), 96, tmp_path / "b" / "tok.model")
    assert p1.name == "tok.model" and p1.with_suffix(".vocab").exists()
    assert p1.read_bytes() == p2.read_bytes()  # same corpus -> byte-identical model

    tok = load_tokenizer(str(p1))
    assert 40 <= tok.vocab_size <= 96  # hard_vocab_limit=False: a tiny corpus may give fewer pieces
    text = "a small red circle at the top left"
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert 0 not in ids  # every corpus character is covered: no <unk>
    assert len(ids) <= len(text.split()) + 2  # whole words became pieces
    assert tok.decode(ids) == text
    ref = tok.reference
    assert ref == {"kind": "sentencepiece", "path": str(p1.resolve()),
                   "sha256": hashlib.sha256(p1.read_bytes()).hexdigest()}
    again = pickle.loads(pickle.dumps(tok))  # data-loader workers get a copy
    assert again.encode(text) == ids and again.reference == ref


def test_cli_trains_from_text_files_and_globs(tmp_path, capsys):
    d = tmp_path / "txt"
    d.mkdir()
    lines = corpus(300, seed=1)
    (d / "one.txt").write_text("\n".join(lines[:150]))
    (d / "two.txt").write_text("\n".join(lines[150:]) + "\n\n")
    assert main(["train", "--input", str(d / "one.txt"), str(d / "t*.txt"), "--vocab-size", "48",
                 "--output", str(tmp_path / "m" / "spm")]) == 0
    assert "wrote" in capsys.readouterr().err
    tok = load_tokenizer(str(tmp_path / "m" / "spm.model"))
    assert tok.decode(tok.encode(lines[0])) == lines[0]
    assert load_tokenizer(str(tmp_path / "m" / "spm.model")).vocab_size == 48  # BPE fills the vocabulary
    assert main(["train", "--input", str(d), "--vocab-size", "48", "--output", str(tmp_path / "dir"),
                 "--model-type", "unigram"]) == 0
    uni = load_tokenizer(str(tmp_path / "dir.model"))
    assert uni.decode(uni.encode(lines[1])) == lines[1]


def test_cli_names_bad_input(tmp_path, capsys, caplog):
    """A bad line is skipped with a line naming file:line; with nothing left, one error line says why."""
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    assert main(["train", "--input", str(tmp_path / "bad.txt"), "--vocab-size", "32",
                 "--output", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --input {tmp_path / 'bad.txt'}: no text to train the tokenizer "
                                               "on; 1 skipped, skip reasons: 1 x text is not UTF-8 (byte N: b'\\xe9')")
    assert [r.getMessage() for r in caplog.records] == [
        f"tokenizer: skipped {tmp_path / 'bad.txt'}:1: text is not UTF-8 (byte 3: b'\\xe9') [1 skipped so far]"]
    assert main(["train", "--input", str(tmp_path / "nothing*"), "--vocab-size", "32",
                 "--output", str(tmp_path / "x")]) == 2
    assert "no such file, folder or glob match" in capsys.readouterr().err


def test_compatibility_by_checksum_not_path(tmp_path):
    a = train_tokenizer(corpus(), 40, tmp_path / "a")
    copy = tmp_path / "elsewhere" / "same.model"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    other = train_tokenizer(corpus(seed=5)[:200], 32, tmp_path / "other")
    ta, tcopy, tother = (load_tokenizer(str(p)) for p in (a, copy, other))
    check_tokenizer_compatible(ta.reference, tcopy.reference, "checkpoint runs/x")  # moved file: fine

    with pytest.raises(TokenizerMismatchError) as e:
        check_tokenizer_compatible(ta.reference, tother.reference, "checkpoint runs/x")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("checkpoint runs/x: tokenizer mismatch")
    assert str(a.resolve()) in msg and str(other.resolve()) in msg
    assert ta.reference["sha256"][:16] in msg and tother.reference["sha256"][:16] in msg

    with pytest.raises(TokenizerMismatchError, match="expected bytes, got sentencepiece"):
        check_tokenizer_compatible(BytesTokenizer().reference, ta.reference, "eval")


def test_bytes_mode():
    tok = load_tokenizer(tokenizer_spec("bytes", "/nonexistent"))  # "bytes" never touches the demo folder
    assert tok.vocab_size == 256
    ids = tok.encode("héllo ✓")
    assert ids == list("héllo ✓".encode("utf-8")) and len(ids) == 10
    assert tok.decode(ids) == "héllo ✓"
    assert tok.decode([0xE2, 0x9C]) == "\ufffd"  # a cut multi-byte character decodes, replaced
    assert tok.reference == {"kind": "bytes", "path": None, "sha256": None}
    check_tokenizer_compatible(tok.reference, BytesTokenizer().reference, "x")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_tokenizer(str(tmp_path / "missing.model"))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.model: not a sentencepiece model"):
        load_tokenizer(str(junk))


def test_cli_says_when_the_vocabulary_came_out_smaller(tmp_path, capsys):
    """A small corpus cannot fill --vocab-size 8000: the command says so in one line, with both sizes."""
    (tmp_path / "few.txt").write_text("\n".join(corpus(40, seed=2)))
    assert main(["train", "--input", str(tmp_path / "few.txt"), "--vocab-size", "8000",
                 "--output", str(tmp_path / "spm")]) == 0
    got = load_tokenizer(str(tmp_path / "spm.model")).vocab_size
    assert got < 8000
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: the vocabulary is {got}, not the --vocab-size 8000 asked for: the text holds no more "
                     "distinct pieces to learn (give more text for a larger vocabulary)"]


def test_unfamiliar_words_are_unknown_or_spelled_out_letter_by_letter(tmp_path):
    """A real sentencepiece model of a colour-and-shape corpus: its words are familiar; "dog" (d-o-g, letters it
    has but no fragment of the word) and "Zebra" (Z is <unk>) are not; 1-character words are not judged; bytes
    have no vocabulary. Its word pieces are whole corpus words, most frequent first."""
    tok = load_tokenizer(str(train_tokenizer(corpus(), 96, tmp_path / "tok")))
    assert tok.unfamiliar_words("a red circle at the top") == ([], 5)
    assert tok.unfamiliar_words("a dog") == (["dog"], 1)
    assert tok.unfamiliar_words("Zebra red") == (["Zebra"], 2)
    assert tok.unfamiliar_words("the quick brown fox") == (["quick", "brown", "fox"], 4)
    assert BytesTokenizer().unfamiliar_words("dog") == ([], 0) and BytesTokenizer().word_pieces(10) == []
    words = tok.word_pieces(40)
    assert set(words) <= set(WORDS) and {"circle", "square", "bottom", "green"} <= set(words), words
    assert tok.word_pieces(3) == words[:3]
