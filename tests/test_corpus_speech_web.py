"""Converters of LibriSpeech, fairseq's wav2vec manifests and img2dataset output, each on a tiny corpus the test
writes in the published layout (real espeak-ng recordings as FLAC through soundfile, real PIL pictures).

Layout sources: LibriSpeech's README.TXT (www.openslr.org/12); fairseq examples/wav2vec/wav2vec_manifest.py and
libri_labels.py (the .tsv's first line is the root, then ``path<TAB>frames``; .wrd words and .ltr letters line by
line); img2dataset's README "Output format choice" (webdataset: ``00000.tar`` holding ``000000000.jpg``,
``.txt``, ``.json`` per sample, plus ``00000_stats.json`` and ``00000.parquet``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import pytest
import soundfile as sf
import webdataset as wds

from unimodal_free.data.corpora import img2dataset, librispeech, wav2vec_manifest
from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import MAX_CORPUS_FILE_BYTES
from unimodal_free.data.corpora.digits import Utterance
from unimodal_free.data.demo.speech import encode_speech, synth_batch

SENTENCES = ["the cat sat on the mat", "a red ball rolls away", "birds sing in the morning",
             "she opened the old door", "rain falls on the roof", "we walked along the river",
             "the train left at noon", "he reads a long book", "green leaves in spring"]


def spoken(texts: list[str]) -> list[bytes]:
    """Each text spoken by espeak-ng (one call), as 16 kHz FLAC bytes."""
    waves = synth_batch([Utterance(t, "en", 170, 50) for t in texts])
    return [encode_speech(wav, sr, "flac") for wav, sr in waves]


@pytest.fixture(scope="module")
def recordings() -> list[bytes]:
    return spoken(SENTENCES)


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"maxcount": 4, "max_file_bytes": MAX_CORPUS_FILE_BYTES, **kw})


def read_split(folder: Path) -> dict:
    urls = sorted(str(p) for p in folder.glob("shard-*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)} if urls else {}


# ------------------------------------------------------------------------------------------------- LibriSpeech

def write_librispeech(root: Path, recordings: list[bytes]) -> dict:
    """LibriSpeech/{train-clean-100,dev-clean}/<spk>/<chap>/<spk>-<chap>-<utt>.flac + <spk>-<chap>.trans.txt;
    one transcript line without its recording, one recording no line names. Returns what a test expects."""
    plan = {"train-clean-100": [("19", "198", 4), ("26", "495", 2)], "dev-clean": [("84", "121", 2)]}
    i = 0
    for subset, chapters in plan.items():
        for spk, chap, n in chapters:
            folder = root / "LibriSpeech" / subset / spk / chap
            folder.mkdir(parents=True)
            lines = []
            for u in range(n):
                utt = f"{spk}-{chap}-{u:04d}"
                (folder / f"{utt}.flac").write_bytes(recordings[i])
                lines.append(f"{utt} {SENTENCES[i].upper()}")
                i += 1
            (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    missing = root / "LibriSpeech/train-clean-100/19/198"
    with open(missing / "19-198.trans.txt", "a") as f:
        f.write("19-198-0099 THIS RECORDING IS MISSING\n")
    (root / "LibriSpeech/dev-clean/84/121/84-121-0077.flac").write_bytes(recordings[8])
    return {"train": 6, "heldout": 2, "dropped": {"19-198-0099.flac", "84-121-0077.flac"}}


def test_librispeech_subsets_become_train_and_heldout(tmp_path, recordings):
    want = write_librispeech(tmp_path / "src", recordings)
    src = tmp_path / "src" / "LibriSpeech"
    report = librispeech.convert(src, tmp_path / "out", args(heldout_subsets=None, heldout=0.02, seed=0))
    train, held = read_split(tmp_path / "out" / "train"), read_split(tmp_path / "out" / "heldout")
    assert len(train) == want["train"] and len(held) == want["heldout"]
    assert report.splits["train"]["combinations"] == {"speech+text": 6}
    assert report.splits["heldout"]["combinations"] == {"speech+text": 2}
    # nothing lost: 9 transcript lines + 1 unnamed recording = 8 written + 2 dropped, each named
    assert len(report.dropped) == 2 and {Path(d.split(":")[0]).name for d in report.dropped} == want["dropped"]
    assert report.splits["train"]["read"] == {"image": 0, "speech": 7, "text": 7}
    assert report.splits["train"]["written"] == {"speech": 6, "text": 6}  # report.json as every converter writes it
    assert "speech read 7, written 6, dropped 1" in report.table()
    s = held["84-121-0000"]
    assert s["txt"].decode() == SENTENCES[6].upper()
    assert s["flac"] == (src / "dev-clean/84/121/84-121-0000.flac").read_bytes()
    assert json.loads(s["json"])["labels"] == {"speaker": "84"} and json.loads(s["json"])["split"] == "heldout"
    assert sf.info(io.BytesIO(s["flac"])).samplerate == 16000
    assert json.loads((tmp_path / "out" / "report.json").read_text())["splits"]["heldout"]["samples"] == 2
    assert "librispeech: 8 samples, 2 entries dropped" in report.table()


def test_librispeech_one_subset_takes_a_seeded_heldout_share(tmp_path, recordings):
    write_librispeech(tmp_path / "src", recordings)
    subset = tmp_path / "src/LibriSpeech/train-clean-100"
    report = librispeech.convert(subset, tmp_path / "out", args(heldout_subsets=None, heldout=0.3, seed=1))
    assert report.splits["train"]["samples"] + report.splits["heldout"]["samples"] == 6
    assert report.splits["heldout"]["samples"] == 2  # round(0.3 * 6)


def test_librispeech_refuses_links_and_ids_that_leave_the_root(tmp_path, recordings):
    write_librispeech(tmp_path / "src", recordings)
    src = tmp_path / "src" / "LibriSpeech"
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "x.flac").write_bytes(recordings[0])
    os.symlink(outside / "x.flac", src / "dev-clean/84/121/84-121-0005.flac")
    with open(src / "dev-clean/84/121/84-121.trans.txt", "a") as f:
        f.write("84-121-0005 A LINK OUT\n")
    with pytest.raises(CorpusError) as e:
        librispeech.convert(src, tmp_path / "out", args(heldout_subsets=None, heldout=0.0, seed=0))
    assert str(e.value) == (f"{src}/dev-clean/84/121/84-121.trans.txt:3: \"path\": 'dev-clean/84/121/84-121-0005.flac' "
                            f"leaves SRC {src} through a symlink")
    os.unlink(src / "dev-clean/84/121/84-121-0005.flac")
    (src / "dev-clean/84/121/84-121.trans.txt").write_text("../../../../secret/x A WAY OUT\n")
    with pytest.raises(CorpusError, match=r"84-121\.trans\.txt:1: entry '\.\./\.\./\.\./\.\./secret/x' refused"):
        librispeech.convert(src, tmp_path / "out", args(heldout_subsets=None, heldout=0.0, seed=0))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- fairseq wav2vec manifest

def write_wav2vec(root: Path, recordings: list[bytes], labels: str = ".wrd") -> Path:
    """audio/<spk>/<n>.flac and manifests/{train,valid}.tsv (+ .wrd or .ltr) as wav2vec_manifest.py writes them."""
    audio = root / "audio"
    manifests = root / "manifests"
    manifests.mkdir(parents=True)
    for name, idx in (("train", range(0, 6)), ("valid", range(6, 8))):
        rows, words = [str(audio)], []
        for i in idx:
            rel = f"spk{i % 2}/{i}.flac"
            (audio / rel).parent.mkdir(parents=True, exist_ok=True)
            (audio / rel).write_bytes(recordings[i])
            rows.append(f"{rel}\t{sf.info(audio / rel).frames}")
            words.append(SENTENCES[i].upper())
        (manifests / f"{name}.tsv").write_text("\n".join(rows) + "\n")
        if labels == ".wrd":
            (manifests / f"{name}.wrd").write_text("\n".join(words) + "\n")
        else:
            (manifests / f"{name}.ltr").write_text("\n".join(" ".join(w.replace(" ", "|")) + " |" for w in words) + "\n")
    return manifests


@pytest.mark.parametrize("labels", [".wrd", ".ltr"])
def test_wav2vec_manifest_with_words_or_letters(tmp_path, recordings, labels):
    manifests = write_wav2vec(tmp_path / "src", recordings, labels)
    report = wav2vec_manifest.convert(manifests, tmp_path / "out", args(audio_root=None))
    train, held = read_split(tmp_path / "out" / "train"), read_split(tmp_path / "out" / "heldout")
    assert report.splits["train"]["combinations"] == {"speech+text": 6} and len(train) == 6
    assert report.splits["heldout"]["combinations"] == {"speech+text": 2} and len(held) == 2
    assert report.dropped == []
    s = held["valid_spk0_6"]
    assert s["txt"].decode() == SENTENCES[6].upper()
    assert s["flac"] == (tmp_path / "src/audio/spk0/6.flac").read_bytes()


def test_wav2vec_manifest_refuses_paths_out_of_the_root(tmp_path, recordings):
    manifests = write_wav2vec(tmp_path / "src", recordings)
    tsv = manifests / "valid.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join(lines[:2] + ["../../etc/passwd\t100"]) + "\n")
    (manifests / "valid.wrd").write_text("A\nB\n")
    with pytest.raises(CorpusError) as e:
        wav2vec_manifest.convert(manifests, tmp_path / "out", args(audio_root=None))
    assert str(e.value) == f"{tsv}:3: \"path\": \"..\" in '../../etc/passwd' refused under the audio root"
    (manifests / "valid.wrd").write_text("A\n")
    with pytest.raises(CorpusError, match=r"valid\.wrd: 1 lines for the 2 recordings of .*valid\.tsv"):
        wav2vec_manifest.convert(manifests, tmp_path / "out", args(audio_root=None))
    with pytest.raises(CorpusError, match=r"train\.tsv: \d+ bytes > the 10-byte limit \(--max-file-bytes\)"):
        wav2vec_manifest.convert(manifests, tmp_path / "out", args(audio_root=None, max_file_bytes=10))


# ------------------------------------------------------------------------------------------------ img2dataset

def picture(i: int) -> bytes:
    """A small real drawing as JPEG bytes: a coloured disc on a plain ground."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (48, 40), (250 - 20 * i, 240, 30 * i))
    ImageDraw.Draw(img).ellipse((8 + i, 6, 30 + i, 30), fill=(40 * i % 255, 90, 200))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_img2dataset(src: Path, per_shard: int = 3, shards: int = 3) -> dict:
    """img2dataset --output_format webdataset: NNNNN.tar of 9-digit keys (shard id + index) with jpg/txt/json,
    NNNNN_stats.json beside each (the NNNNN.parquet of the same rows is left out: writing it needs pyarrow).
    One sample's picture is broken. Returns the captions by key."""
    import tarfile

    src.mkdir(parents=True)
    captions = {}
    for s in range(shards):
        with tarfile.open(src / f"{s:05d}.tar", "w") as tar:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                i = s * per_shard + j
                caption = SENTENCES[i % len(SENTENCES)]
                meta = {"url": f"https://example.com/{i}.jpg", "caption": caption, "key": key, "status": "success",
                        "error_message": None, "width": 48, "height": 40, "original_width": 480,
                        "original_height": 400, "exif": "{}", "sha256": "0" * 64}
                jpg = picture(i) if i != 4 else b"\xff\xd8 not really a jpeg"
                for ext, data in (("jpg", jpg), ("txt", caption.encode()), ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                captions[key] = caption
        (src / f"{s:05d}_stats.json").write_text(json.dumps({"count": per_shard, "successes": per_shard}))
    return captions


def test_img2dataset_webdataset_is_read_as_it_is(tmp_path):
    """No sample rewritten: DST/train and DST/heldout link to the shards, the reader reads them through the config
    snippet, the report counts what it will see and names the broken picture."""
    from unimodal_free.config import DataConfig, config_from_dict
    from unimodal_free.data.loading.sources import expand_shards
    from unimodal_free.data.reading.handlers import SkipCounter
    from unimodal_free.data.reading.samples import read_shard

    src = tmp_path / "cc"
    captions = write_img2dataset(src)
    report = img2dataset.convert(src, tmp_path / "out", args(heldout_shards=1, heldout=0.05, seed=0, root=None))
    assert report.splits["train"]["combinations"] == {"image+text": 5}  # 6 samples, one broken picture
    assert report.splits["heldout"]["combinations"] == {"image+text": 3}
    assert report.splits["train"]["read"] == {"image": 6, "speech": 0, "text": 6}
    assert len(report.dropped) == 1 and report.dropped[0].startswith(f"{src / '00001.tar'}:000010001: image: ")
    assert sorted(p.name for p in (tmp_path / "out/heldout").iterdir()) == ["00002.tar"]
    assert (tmp_path / "out/heldout/00002.tar").resolve() == (src / "00002.tar").resolve()
    snippet = json.loads((tmp_path / "out" / "config-snippet.json").read_text())
    cfg = config_from_dict(snippet)
    keys = {}
    for side in ("train", "heldout"):
        for src_ in getattr(cfg.data, side):
            for url in expand_shards(src_):
                for sample in read_shard(url, SkipCounter("t"), DataConfig()):
                    keys[sample["__key__"]] = sample["txt"].decode()
    assert keys == captions  # every sample of the corpus, bytes as img2dataset wrote them
    with pytest.raises(CorpusError, match=r"--heldout-shards 3: .* has 3 shards, so between 0 and 2"):
        img2dataset.convert(src, tmp_path / "o2", args(heldout_shards=3, heldout=0.05, seed=0, root=None))


def test_img2dataset_caption_path_table(tmp_path):
    """A caption<TAB>path table (header optional) becomes image+text shards; '../' and parquet are refused."""
    folder = tmp_path / "files"
    folder.mkdir()
    rows = ["caption\tpath"]
    for i in range(8):
        (folder / f"{i:09d}.jpg").write_bytes(picture(i))
        rows.append(f"{SENTENCES[i]}\t{i:09d}.jpg")
    rows.append("a row without a path")
    (folder / "pairs.tsv").write_text("\n".join(rows) + "\n")
    report = img2dataset.convert(folder / "pairs.tsv", tmp_path / "out",
                                 args(heldout_shards=1, heldout=0.25, seed=0, root=None))
    assert report.splits["train"]["combinations"] == {"image+text": 6}
    assert report.splits["heldout"]["combinations"] == {"image+text": 2}
    assert report.dropped == [f"{folder / 'pairs.tsv'}:10: expected caption<TAB>path"]
    got = read_split(tmp_path / "out" / "heldout") | read_split(tmp_path / "out" / "train")
    assert {s["txt"].decode() for s in got.values()} == set(SENTENCES[:8])
    (folder / "bad.tsv").write_text("a cat\t000000001.jpg\nthe passwords\t../../../etc/passwd\n")
    with pytest.raises(CorpusError) as e:
        img2dataset.convert(folder / "bad.tsv", tmp_path / "o2", args(heldout_shards=1, heldout=0.0, seed=0, root=None))
    assert str(e.value) == f"{folder / 'bad.tsv'}:2: \"path\": \"..\" in '../../../etc/passwd' refused under --root"
    (folder / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(CorpusError, match="needs pyarrow"):
        img2dataset.convert(folder / "t.parquet", tmp_path / "o3", args(heldout_shards=1, heldout=0.0, seed=0, root=None))


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_converters_shards_tokenizer_two_rank_training_and_eval(tmp_path, recordings, capsys):
    """LibriSpeech, a wav2vec manifest and img2dataset output: CLI -> shards -> tokenizer -> one 20-step training
    on 2 ranks reading all three corpora's train shards (weighted sources) -> eval of each corpus's held-out set."""
    from helpers import DEEPSPEED, ROOT, free_port, run, tail
    from unimodal_free.data.corpora.__main__ import main as corpora_main
    from unimodal_free.data.reading.tokenizer import main as tokenizer_main
    from unimodal_free.eval.cli import main as eval_main

    write_librispeech(tmp_path / "ls", recordings)
    manifests = write_wav2vec(tmp_path / "w2v", recordings)
    write_img2dataset(tmp_path / "cc", per_shard=4)
    out = tmp_path / "shards"
    for argv in (["librispeech", tmp_path / "ls/LibriSpeech", out / "ls"],
                 ["wav2vec-manifest", manifests, out / "w2v"],
                 ["img2dataset", tmp_path / "cc", out / "cc"]):
        assert corpora_main([str(a) for a in argv] + ["--maxcount", "3"]) == 0
    printed = capsys.readouterr().out
    assert "librispeech: 8 samples" in printed and "wav2vec-manifest: 8 samples" in printed
    assert "img2dataset: 11 samples" in printed  # 12 pictures, one broken
    assert tokenizer_main(["train", "--input", str(out / "*/train/*.tar"), "--vocab-size", "96",
                           "--output", str(out / "spm")]) == 0
    assert "from 20 sentences" in capsys.readouterr().err  # every train caption: 6 + 6 + 8 (the broken picture's too)
    train = [{"path": str(out / name / "train"), "weight": w} for name, w in (("ls", 1), ("w2v", 1), ("cc", 2))]
    held = [{"path": str(out / name / "heldout")} for name in ("ls", "w2v", "cc")]
    run_dir = tmp_path / "run"
    sets = ["train.max_steps=20", "train.log_every=5", "train.micro_batch_size=4", "train.checkpoint_every=20",
            "eval.every=20", f"train.output_dir={run_dir}", f"data.train={json.dumps(train)}",
            f"data.heldout={json.dumps(held)}", f"data.tokenizer={out / 'spm.model'}"]
    cmd = [DEEPSPEED, "--num_gpus", "2", "--master_port", str(free_port()), "launch/train.py",
           "--config", str(ROOT / "configs/tiny.json")] + [a for s in sets for a in ("--set", s)]
    log = tmp_path / "train.log"
    assert run(cmd, log) == 0, tail(log)
    assert "data.heldout is unset" not in log.read_text()
    for name, n in (("ls", 2), ("w2v", 2), ("cc", 4)):
        res = tmp_path / f"{name}.json"
        assert eval_main(["--checkpoint", str(run_dir), "--data", str(out / name / "heldout"),
                          "--json", str(res)]) == 0
        got = json.loads(res.read_text())
        direction = "image_to_text" if name == "cc" else "speech_to_text"
        assert got[f"{direction}_num_queries"] == n, got
