"""Names, header sizes and compressions that come from files, through the public CLIs.

A file name found by a glob or a folder listing is opened as a file, never run;
a tar header's claimed size is refused before anything reads it; bzip2 and xz
shards read like gzip ones. The memory each bomb costs is measured in
test_hostile_memory.py.
"""

import bz2
import gzip
import lzma
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from helpers import NUM_COCO, NUM_TRIPLES, TOK, make_cfg, row_keys
from unimodal_free.data.loading.loader import make_train_loader
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.data.reading import tokenizer
from unimodal_free.data.reading.tar_reader import MAX_RECORD_BYTES
from unimodal_free.data.rewriting import pairing
from unimodal_free.eval.cli import main as eval_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

HOSTILE = "pipe:cd ..; echo pwned >> PWNED #.tar"  # run by /bin/sh in its folder, it writes ../PWNED
GIB2 = 2 << 30


def eval_summary(capsys) -> tuple[int, int]:
    """(samples, skipped) from the eval CLI's first stdout line."""
    out = capsys.readouterr().out
    found = re.search(r"; (\d+) samples, rows .*?, (\d+) skipped", out)
    assert found, out
    return int(found[1]), int(found[2])


# ---------------------------------------------------------------- names from listings are files


@pytest.fixture
def hostile_folder(setup, tmp_path, monkeypatch):
    """tmp/sub holds the writer's triples shards, one of them under a name that is a shell command; cwd = sub."""
    sub = tmp_path / "sub"
    sub.mkdir()
    first, second = sorted(Path(setup["shards"][0]).glob("*.tar"))
    shutil.copy(first, sub / HOSTILE)
    shutil.copy(second, sub / "shard-000001.tar")
    monkeypatch.chdir(sub)
    return tmp_path


@pytest.mark.parametrize("data", ["*.tar", ".", "{pipe:cd ..; echo pwned >> PWNED #,shard-000001}.tar"])
def test_eval_opens_listed_names_as_files(setup, hostile_folder, data, capsys):
    assert eval_main(["--checkpoint", str(setup["export"]), "--data", data]) == 0
    assert not (hostile_folder / "PWNED").exists()
    assert eval_summary(capsys) == (NUM_TRIPLES, 0)  # the hostile name's samples were read from the file


def test_pairing_opens_listed_names_as_files(hostile_folder, capsys):
    assert pairing.main(["*.tar", str(hostile_folder / "out")]) == 0
    assert not (hostile_folder / "PWNED").exists()
    assert f"read {NUM_TRIPLES} samples" in capsys.readouterr().out


def test_expanded_local_names_are_absolute_and_a_written_url_stays_one(hostile_folder):
    assert expand_shards("*.tar") == sorted([str(hostile_folder / "sub" / HOSTILE),
                                             str(hostile_folder / "sub" / "shard-000001.tar")])
    assert expand_shards("pipe:cat a-{0..1}.tar") == ["pipe:cat a-0.tar", "pipe:cat a-1.tar"]


# ---------------------------------------------------------------- sizes from headers, refused before reading


def header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(tarfile.GNU_FORMAT)


def claimed_member(path: Path, kind: bytes, size: int = GIB2) -> Path:
    """A .tar.gz of a few KB whose first header claims ``size`` bytes (the data is not there)."""
    path.write_bytes(gzip.compress(header("././@LongLink", kind, size) + bytes(4096)))
    return path


def pax_size_member(path: Path, size: int = GIB2) -> Path:
    """A ustar member of 5 bytes whose pax record says ``size`` (tarfile applies the pax size)."""
    info = tarfile.TarInfo("big.txt")
    info.size = 5
    info.pax_headers = {"size": str(size)}
    path.write_bytes(info.tobuf(tarfile.PAX_FORMAT) + b"hello".ljust(512, b"\0") + bytes(1024))
    return path


BOMBS = {
    "gnu_long_name": lambda p: claimed_member(p / "b-L.tar.gz", tarfile.GNUTYPE_LONGNAME),
    "gnu_long_link": lambda p: claimed_member(p / "b-K.tar.gz", tarfile.GNUTYPE_LONGLINK),
    "pax_header": lambda p: claimed_member(p / "b-x.tar.gz", tarfile.XHDTYPE),
    "pax_global_header": lambda p: claimed_member(p / "b-g.tar.gz", tarfile.XGLTYPE),
}
RECORD_REFUSAL = f"a tar long-name/pax record claims {GIB2} bytes > the tar record cap={MAX_RECORD_BYTES}"


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_claimed_record_size_is_refused_by_eval_training_and_tokenizer(setup, tmp_path, bomb, capsys, caplog):
    data = tmp_path / "data"
    shutil.copytree(setup["shards"][0], data)
    shard = BOMBS[bomb](data)
    with caplog.at_level("WARNING", logger="unimodal_free.data"):
        assert eval_main(["--checkpoint", str(setup["export"]), "--data", str(data)]) == 0
    assert eval_summary(capsys) == (NUM_TRIPLES, 1)
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1 and str(shard) in lines[0] and RECORD_REFUSAL in lines[0], lines

    cfg = make_cfg([str(data)])
    batches = list(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1, resampled=False))
    assert sum(b.skipped for b in batches) == 1 and len({k for b in batches for _, k in row_keys(b)}) == NUM_TRIPLES

    caplog.clear()
    with caplog.at_level("WARNING", logger="unimodal_free.data"):
        assert tokenizer.main(["train", "--input", str(data), "--vocab-size", "40",
                               "--output", str(tmp_path / "tok")]) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"tokenizer: skipped {shard}:(tar record): {RECORD_REFUSAL}"), lines


def test_pax_size_over_the_member_cap_is_refused_everywhere(setup, tmp_path, capsys, caplog):
    data = tmp_path / "data"
    shutil.copytree(setup["shards"][0], data)
    shard = pax_size_member(data / "b-000009.tar")
    with caplog.at_level("WARNING", logger="unimodal_free.data"):
        assert eval_main(["--checkpoint", str(setup["export"]), "--data", str(data)]) == 0
        assert tokenizer.main(["train", "--input", str(data), "--vocab-size", "40",
                               "--output", str(tmp_path / "tok")]) == 0
    assert eval_summary(capsys) == (NUM_TRIPLES, 1)
    refusal = f"big.txt has {GIB2} bytes > data.max_member_bytes={32 << 20}"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(str(shard) in line and refusal in line for line in lines), lines


# ---------------------------------------------------------------- bzip2 and xz shards


@pytest.fixture
def recompressed(setup, tmp_path):
    """The writer's shards recompressed: .tar.bz2, .tar.xz, and xz / bzip2 content under a .tar name."""
    out = tmp_path / "recompressed"
    out.mkdir()
    triples = sorted(Path(setup["shards"][0]).glob("*.tar"))
    coco = Path(setup["root"]) / "coco" / "shard-000000.tar"
    (out / "a-000000.tar.bz2").write_bytes(bz2.compress(triples[0].read_bytes()))
    (out / "a-000001.tar.xz").write_bytes(lzma.compress(triples[1].read_bytes()))
    (out / "b-000000.tar").write_bytes(lzma.compress(coco.read_bytes()))  # sniffed, not named
    plain = tmp_path / "plain"
    plain.mkdir()
    for i, src in enumerate(triples + [coco]):
        shutil.copy(src, plain / f"p-{i:06d}.tar")
    return out, plain


def test_bz2_and_xz_shards_read_like_plain_ones(setup, recompressed, tmp_path, capsys):
    out, plain = recompressed

    def train_keys(folder):
        cfg = make_cfg([str(folder)])
        batches = list(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1, resampled=False))
        assert sum(b.skipped for b in batches) == 0
        return sorted(k for b in batches for _, k in row_keys(b))

    assert train_keys(out) == train_keys(plain) and len(set(train_keys(out))) == NUM_TRIPLES + NUM_COCO
    assert eval_main(["--checkpoint", str(setup["export"]), "--data", str(out)]) == 0
    assert eval_summary(capsys) == (NUM_TRIPLES + NUM_COCO, 0)
    odd = tmp_path / "odd-000000.tar.gz"
    odd.write_bytes((out / "a-000000.tar.bz2").read_bytes())  # bzip2 under a gzip name: sniffed too
    sentences = list(tokenizer.iter_sentences([str(plain)]))
    assert len(sentences) == NUM_TRIPLES + NUM_COCO * 3 and list(tokenizer.iter_sentences([str(out)])) == sentences
    assert list(tokenizer.iter_sentences([str(odd)])) == list(tokenizer.iter_sentences([str(plain / "p-000000.tar")]))
