"""The handwritten-digits corpus: scikit-learn's own 8x8 digits as pictures, espeak-ng number words, captions,
{"digit": ...} labels, through the shard writer and the real reader into the EmbeddingSet."""

import json

import numpy as np
import pytest

from helpers import embedded_labels
from unimodal_free.data.corpora import digits
from unimodal_free.data.reading import tokenizer as tokenizer_cli
from unimodal_free.data.reading.media import open_image, read_audio
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.data.writing import shards as shard_cli
from unimodal_free.eval.zeroshot import load_class_specs

LIMIT, HELDOUT = 40, 0.25


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "corpus"
    return out, digits.build(out, heldout=HELDOUT, limit=LIMIT)


def manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_build_writes_labelled_pictures_words_and_captions(corpus):
    out, counts = corpus
    images, targets = digits.load()
    assert images.shape == (1797, 8, 8) and images.max() == digits.GREY_LEVELS
    train, held = manifest(out / "train.jsonl"), manifest(out / "heldout.jsonl")
    assert len(train) + len(held) == LIMIT and not {r["key"] for r in train} & {r["key"] for r in held}
    per_digit = {str(d): int((targets[:LIMIT] == d).sum()) for d in range(10)}
    assert {d: counts["train"].get(d, 0) + counts["heldout"].get(d, 0) for d in per_digit} == per_digit
    assert counts["heldout"] == {d: round(HELDOUT * n) for d, n in per_digit.items() if round(HELDOUT * n)}
    for r in train + held:
        i = int(r["key"].split("-")[1])
        digit, word = str(targets[i]), digits.WORDS[targets[i]]
        assert r["label"] == {"digit": digit} and r["split"] in ("train", "heldout")
        assert r["text"] in {t.format(word=word) for t in digits.TEMPLATES}
        img = open_image((out / r["image"]).read_bytes())
        assert img.size == (64, 64) and img.mode == "L"
        pixels = np.asarray(img)[::8, ::8]  # one value per 8x8 block: nearest keeps the 17 grey levels
        assert np.array_equal(pixels, np.rint(255 - images[i] * 255 / 16).astype(np.uint8))
        assert np.array_equal(np.asarray(img), np.kron(pixels, np.ones((8, 8), dtype=np.uint8)))
        wav, sr, _ = read_audio((out / r["speech"]).read_bytes())
        assert sr == 16000 and 0.2 < len(wav) / sr < 2.5 and np.abs(wav).max() > 0.1  # one word, not silence
    assert len({r["voice"] for r in train + held}) > 3  # varied voices
    (spec,) = load_class_specs(str(out / "classes.json"))  # what `eval zeroshot --classes` reads
    assert spec.field == "digit" and spec.classnames == tuple(str(d) for d in range(10))
    assert spec.prompts("7") == [t.format(word="seven") for t in digits.TEMPLATES]


def test_shards_carry_digit_labels_to_the_embedding_set(corpus, tmp_path):
    out, _ = corpus
    for split in ("train", "heldout"):
        assert shard_cli.main(["manifest", str(out / f"{split}.jsonl"), str(tmp_path / split), "--split", split]) == 0
    assert tokenizer_cli.main(["train", "--input", str(tmp_path / "train"), "--vocab-size", "60",
                               "--output", str(tmp_path / "spm")]) == 0
    tok = load_tokenizer(str(tmp_path / "spm.model"))
    held = manifest(out / "heldout.jsonl")
    for r in held:  # held-out captions: every word is known to a tokenizer trained on the training captions
        ids = tok.encode(r["text"])
        assert 0 not in ids and tok.decode(ids) == r["text"]
    got = embedded_labels([tmp_path / "heldout"], tmp_path / "spm.model")
    want = {r["key"]: r["label"] for r in held}
    assert got == {"image": want, "speech": want, "text": want}


def test_build_is_reproducible(corpus, tmp_path):
    out, _ = corpus
    first, again = (digits.build(tmp_path / name, heldout=HELDOUT, limit=12) for name in ("first", "again"))
    assert first == again
    files = sorted(p.relative_to(tmp_path / "first") for p in (tmp_path / "first").rglob("*") if p.is_file())
    assert len(files) == 3 + 2 * 12  # two manifests, classes.json, a picture and a recording per digit
    for f in files:  # byte-identical, recordings included (for the same arguments: batching depends on them)
        assert (tmp_path / "first" / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
    for p in (tmp_path / "first" / "images").iterdir():  # a picture depends on nothing but its digit
        assert p.read_bytes() == (out / "images" / p.name).read_bytes()


def test_bad_options_fail_in_one_line(tmp_path, capsys):
    assert digits.main([str(tmp_path / "o"), "--size", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --size: must be a multiple of 8 (the digits are 8x8 pixels), got 12"
    assert digits.main([str(tmp_path / "o"), "--heldout", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: --heldout: must be a share in [0, 1), got 1.5"
