"""Shard writer: every layout round-trips real files through real tar shards."""

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds
from PIL import Image

from unimodal_free.data.reading.media import BadMedia, decode_image_rgb, open_image, read_audio
from unimodal_free.data.writing import shards
from unimodal_free.data.writing.raw_samples import MAX_KEY_LEN, MAX_TEXT_BYTES, KeyMaker
from unimodal_free.data.writing.shard_writer import parse_size


# ----------------------------------------------------------------- media makers

def image_bytes(fmt: str, size=(24, 16), mode="RGB", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return buf.getvalue()


def audio_bytes(fmt: str, seconds=0.3, sr=16000, subtype=None) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    wav = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format=fmt, subtype=subtype or ("VORBIS" if fmt == "OGG" else "PCM_16"))
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR is rewritten (with a valid CRC) to claim a huge size."""
    data = bytearray(image_bytes("PNG", (2, 2)))
    ihdr = 8 + 8  # signature + chunk length/type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def read_shards(out: Path) -> dict:
    """{key: {ext: bytes}} over all shards in name order, asserting sizes.json agrees."""
    sizes = json.loads((out / "sizes.json").read_text())
    names = sorted(p.name for p in out.glob("shard-*.tar"))
    assert list(sizes) == names
    samples = {}
    for name in names:
        got = list(wds.WebDataset(str(out / name), shardshuffle=False))
        assert len(got) == sizes[name] > 0
        for s in got:
            assert s["__key__"] not in samples
            samples[s["__key__"]] = {k: v for k, v in s.items() if not k.startswith("__")}
    return samples


def run(capsys, *argv):
    rc = shards.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err.strip().splitlines()


# ----------------------------------------------------------------------- layouts

def test_images_layout_roundtrip(tmp_path, capsys):
    src = tmp_path / "in"
    files = {
        "cats/a.png": image_bytes("PNG", seed=1),
        "cats/rgba.png": image_bytes("PNG", mode="RGBA", seed=2),
        "dogs/b.jpg": image_bytes("JPEG", seed=3),
        "dogs/c.webp": image_bytes("WEBP", seed=4),
        "x.y.z.png": image_bytes("PNG", seed=5),
        "nocap.png": image_bytes("PNG", seed=6),
        "old.bmp": image_bytes("BMP", seed=7),
    }
    for name, data in files.items():
        write(src / name, data)
        if "nocap" not in name:
            write((src / name).with_suffix(".txt"), f"caption of {name}\n")
    rc, err = run(capsys, "images", src, tmp_path / "out")
    assert rc == 0, err
    got = read_shards(tmp_path / "out")
    assert set(got) == {"cats_a", "cats_rgba", "dogs_b", "dogs_c", "x_y_z", "nocap", "old"}
    assert got["cats_a"]["png"] == files["cats/a.png"]
    assert got["cats_rgba"]["png"] == files["cats/rgba.png"]
    assert got["dogs_b"]["jpg"] == files["dogs/b.jpg"]
    assert got["dogs_c"]["webp"] == files["dogs/c.webp"]
    assert got["x_y_z"]["txt"] == b"caption of x.y.z.png"
    assert "txt" not in got["nocap"]  # no caption: an image-only sample
    # BMP is not a shard format: re-encoded losslessly to PNG.
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(got["old"]["png"]))),
                          np.asarray(Image.open(io.BytesIO(files["old.bmp"]))))
    meta = json.loads(got["dogs_b"]["json"])
    assert meta["pair"] == "dogs_b" and meta["split"] == "train" and meta["source"] == "dogs/b.jpg"
    assert "image 1, image+text 6" in err[-1] and "skipped 0" in err[-1]


def test_librispeech_layout_roundtrip(tmp_path, capsys):
    src = tmp_path / "LibriSpeech" / "dev-clean"
    chap = src / "84" / "121123"
    a0 = write(chap / "84-121123-0000.flac", audio_bytes("FLAC"))
    a1 = write(chap / "84-121123-0001.flac", audio_bytes("FLAC", seconds=0.5))
    write(chap / "84-121123.trans.txt",
          "84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n84-121123-0002 MISSING AUDIO\n")
    rc, err = run(capsys, "librispeech", tmp_path / "LibriSpeech", tmp_path / "out", "--split", "dev")
    assert rc == 0
    got = read_shards(tmp_path / "out")
    assert set(got) == {"84-121123-0000", "84-121123-0001"}
    assert got["84-121123-0000"]["flac"] == a0.read_bytes()
    assert got["84-121123-0001"]["flac"] == a1.read_bytes()
    assert got["84-121123-0001"]["txt"] == b"BUT IN LESS THAN FIVE MINUTES"
    meta = json.loads(got["84-121123-0000"]["json"])
    assert meta == {"pair": "84-121123-0000", "split": "dev", "speaker": "84", "chapter": "121123",
                    "source": "dev-clean/84/121123/84-121123-0000.flac", "labels": {"speaker": "84"},
                    "modalities": ["speech", "text"]}
    assert len([l for l in err if l.startswith("skip")]) == 1
    assert "84-121123-0002.flac: missing file" in err[0]
    assert "skipped 1" in err[-1]


def test_coco_layout_keeps_all_captions(tmp_path, capsys):
    imgs = tmp_path / "val2017"
    write(imgs / "000000000139.jpg", image_bytes("JPEG", seed=1))
    write(imgs / "000000000285.png", image_bytes("PNG", seed=2))
    doc = {"images": [{"id": 139, "file_name": "000000000139.jpg"}, {"id": 285, "file_name": "000000000285.png"},
                      {"id": 7, "file_name": "gone.jpg"}],
           "annotations": [{"image_id": 139, "id": 1, "caption": "A room with a  TV."},
                           {"image_id": 139, "id": 2, "caption": "  A living room.\n"},
                           {"image_id": 285, "id": 3, "caption": "A bear."}]}
    ann = write(tmp_path / "annotations" / "captions_val2017.json", json.dumps(doc))
    rc, err = run(capsys, "coco", ann, tmp_path / "out", "--images", imgs, "--maxcount", 1)
    assert rc == 0
    got = read_shards(tmp_path / "out")
    assert sorted(json.loads((tmp_path / "out" / "sizes.json").read_text()).values()) == [1, 1]
    s = got["000000000139"]
    assert s["jpg"] == (imgs / "000000000139.jpg").read_bytes()
    assert s["txt"].decode().splitlines() == ["A room with a TV.", "A living room."]
    meta = json.loads(s["json"])
    assert meta["captions"] == ["A room with a TV.", "A living room."] and meta["image_id"] == 139
    assert got["000000000285"]["txt"] == b"A bear."
    assert len(err) == 2 and "gone.jpg: missing file" in err[0]


def test_text_layout_file_folder_and_glob(tmp_path, capsys):
    d = tmp_path / "corpus"
    write(d / "a.txt", "first line\n\n  second line  \n")
    write(d / "sub" / "b.txt", "\ufeffthird\n")
    write(d / "latin1.txt", "caf\xe9\n".encode("latin-1"))
    rc, err = run(capsys, "text", d, tmp_path / "out_dir")
    assert rc == 0
    got = read_shards(tmp_path / "out_dir")
    assert {k: v["txt"].decode() for k, v in got.items()} == {
        "a-0000001": "first line", "a-0000003": "second line", "sub_b-0000001": "third"}
    assert [l for l in err if l.startswith("skip")] == [f"skip {d / 'latin1.txt'}: text is not UTF-8 (byte 3)"]

    rc, _ = run(capsys, "text", d / "a.txt", tmp_path / "out_file")
    assert rc == 0 and len(read_shards(tmp_path / "out_file")) == 2
    rc, _ = run(capsys, "text", str(d / "**" / "b.txt"), tmp_path / "out_glob")
    assert rc == 0 and list(read_shards(tmp_path / "out_glob")) == ["b-0000001"]


def test_manifest_layout_any_modality_subset(tmp_path, capsys):
    base = tmp_path / "data"
    img = write(base / "img" / "p.webp", image_bytes("WEBP"))
    ogg = write(base / "wav" / "p.ogg", audio_bytes("OGG"))
    wav = write(base / "wav" / "q.wav", audio_bytes("WAV"))
    write(base / "txt" / "q.txt", "spoken words\n")
    lines = [
        {"key": "pair/one", "image": "img/p.webp", "speech": "wav/p.ogg", "text": "a picture", "lang": "en"},
        {"key": "q", "speech": "wav/q.wav", "text": {"path": "txt/q.txt"}, "pair": "group-7", "split": "heldout"},
        {"image": "img/p.webp"},
        "not an object",
    ]
    man = write(base / "manifest.jsonl", "\n".join(json.dumps(l) for l in lines) + "\n{broken\n")
    rc, err = run(capsys, "manifest", man, tmp_path / "out")
    assert rc == 0
    got = read_shards(tmp_path / "out")
    assert list(got) == ["pair_one", "q", "manifest-0000003"]
    one = got["pair_one"]
    assert one["webp"] == img.read_bytes() and one["ogg"] == ogg.read_bytes() and one["txt"] == b"a picture"
    assert json.loads(one["json"]) == {"pair": "pair_one", "split": "train", "lang": "en",
                                       "modalities": ["image", "speech", "text"]}
    q = got["q"]
    assert q["wav"] == wav.read_bytes() and q["txt"] == b"spoken words"
    assert json.loads(q["json"]) == {"pair": "group-7", "split": "heldout",
                                     "modalities": ["speech", "text"]}
    assert set(got["manifest-0000003"]) == {"webp", "json"}
    skips = [l for l in err if l.startswith("skip")]
    assert skips == [f"skip {man}:4: manifest line is not a JSON object",
                     f"skip {man}:5: invalid JSON (Expecting property name enclosed in double quotes)"]


def test_flac_and_ogg_vorbis_input_kept_as_is(tmp_path, capsys):
    flac = write(tmp_path / "s" / "a.flac", audio_bytes("FLAC", sr=22050))
    ogg = write(tmp_path / "s" / "b.ogg", audio_bytes("OGG", sr=8000))
    aiff = write(tmp_path / "s" / "c.aiff", audio_bytes("AIFF"))
    man = write(tmp_path / "s" / "m.jsonl", "".join(json.dumps({"key": p.stem, "speech": p.name}) + "\n"
                                                    for p in (flac, ogg, aiff)))
    rc, _ = run(capsys, "manifest", man, tmp_path / "out")
    assert rc == 0
    got = read_shards(tmp_path / "out")
    assert got["a"]["flac"] == flac.read_bytes() and got["b"]["ogg"] == ogg.read_bytes()
    # AIFF is not a shard format: re-encoded losslessly to 16-bit FLAC.
    x, sr, fmt = read_audio(got["c"]["flac"])
    y, sr0, _ = read_audio(aiff.read_bytes())
    assert fmt == "FLAC" and sr == sr0 and np.array_equal(x, y)


# ------------------------------------------------------------------- shard sizes

def test_maxcount_and_no_empty_trailing_shard(tmp_path, capsys):
    write(tmp_path / "t25.txt", "\n".join(f"line {i}" for i in range(25)))
    write(tmp_path / "t20.txt", "\n".join(f"line {i}" for i in range(20)))
    assert run(capsys, "text", tmp_path / "t25.txt", tmp_path / "o25", "--maxcount", 10)[0] == 0
    assert json.loads((tmp_path / "o25" / "sizes.json").read_text()) == {
        "shard-000000.tar": 10, "shard-000001.tar": 10, "shard-000002.tar": 5}
    assert run(capsys, "text", tmp_path / "t20.txt", tmp_path / "o20", "--maxcount", 10)[0] == 0
    assert sorted(p.name for p in (tmp_path / "o20").iterdir()) == ["shard-000000.tar", "shard-000001.tar",
                                                                  "sizes.json"]
    keys = list(read_shards(tmp_path / "o20"))
    assert keys == [f"t20-{i:07d}" for i in range(1, 21)]  # order kept across shards


def test_maxsize_bounds_every_shard_file(tmp_path, capsys):
    src = tmp_path / "imgs"
    for i in range(12):  # ~12 KB of incompressible PNG each
        write(src / f"{i:02d}.png", image_bytes("PNG", (64, 64), seed=i))
    write(src / "zz_big.png", image_bytes("PNG", (160, 160), seed=99))  # ~77 KB: bigger than maxsize
    maxsize = 50_000
    rc, _ = run(capsys, "images", src, tmp_path / "out", "--maxsize", maxsize)
    assert rc == 0
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sum(sizes.values()) == 13 and len(sizes) > 3
    for name, count in sizes.items():
        size = (tmp_path / "out" / name).stat().st_size
        assert size <= maxsize or count == 1, (name, size, count)
        with tarfile.open(tmp_path / "out" / name) as tar:
            assert len({m.name.split(".")[0] for m in tar}) == count
    last = sorted(sizes)[-1]
    assert sizes[last] == 1 and (tmp_path / "out" / last).stat().st_size > maxsize


def test_maxsize_units():
    assert parse_size("5e8") == 500_000_000
    assert parse_size("100MB") == 100_000_000
    assert parse_size("1GiB") == 2**30


# -------------------------------------------------------------------- bad inputs

def test_corrupt_inputs_skipped_counted_and_named(tmp_path, capsys):
    src = tmp_path / "in"
    good = image_bytes("PNG")
    write(src / "good.png", good), write(src / "good.txt", "fine")
    bad = {
        "truncated.png": good[: len(good) // 2],
        "garbage.jpg": b"plain text, not a picture",
        "soi.jpg": b"\xff\xd8\xff\xe0 a JPEG start marker, then nothing",
        "huge.png": png_claiming(20000, 20000),
        "wide.png": png_claiming(9000, 10),
        "big.png": png_claiming(7000, 7000),
        "latin1.png": good,
        "empty.png": good,
    }
    for name, data in bad.items():
        write(src / name, data)
        write((src / name).with_suffix(".txt"), "ok")
    write(src / "latin1.txt", "caf\xe9".encode("latin-1"))
    write(src / "empty.txt", "  \n")
    rc, err = run(capsys, "images", src, tmp_path / "out")
    assert rc == 0
    assert list(read_shards(tmp_path / "out")) == ["good"]
    skips = [l for l in err if l.startswith("skip")]
    assert len(skips) == len(bad)
    named = {name: next(l for l in skips if name.split(".")[0] + "." in l) for name in bad}
    assert "cannot decode image" in named["truncated.png"]
    assert "not an image" in named["garbage.jpg"] and "cannot decode image" in named["soi.jpg"]
    assert "400000000 pixels" in named["huge.png"] and "9000x10" in named["wide.png"]
    assert "7000x7000" in named["big.png"]  # under PIL's limit, over ours
    assert "latin1.txt: text is not UTF-8" in named["latin1.png"]
    assert "empty.txt: text is empty" in named["empty.png"]
    assert err[-1].endswith(f"skipped {len(bad)} unusable inputs")


def test_undecodable_audio_and_missing_files(tmp_path, capsys):
    flac = audio_bytes("FLAC")
    write(tmp_path / "cut.flac", flac[: len(flac) // 3])
    write(tmp_path / "noise.ogg", b"OggS" + bytes(range(256)) * 4)
    man = write(tmp_path / "m.jsonl", "\n".join(json.dumps(o) for o in [
        {"key": "cut", "speech": "cut.flac", "text": "x"},
        {"key": "noise", "speech": "noise.ogg"},
        {"key": "gone", "image": "nope.png", "text": "y"},
        {"key": "textless", "text": "   "},
    ]))
    rc, err = run(capsys, "manifest", man, tmp_path / "out")
    assert rc == 1  # nothing written
    assert not list((tmp_path / "out").glob("*.tar"))
    assert [l.split(":")[0] for l in err[:-1]] == [
        f"skip {tmp_path / 'cut.flac'}", f"skip {tmp_path / 'noise.ogg'}", f"skip {tmp_path / 'nope.png'}",
        f"skip {man}"]
    assert "cannot decode audio" in err[0] and "missing file" in err[2] and "text is empty" in err[3]
    assert err[-1].startswith("wrote 0 samples") and err[-1].endswith("skipped 4 unusable inputs")


def test_refuses_output_that_already_holds_shards(tmp_path, capsys):
    write(tmp_path / "t.txt", "one\ntwo\n")
    assert run(capsys, "text", tmp_path / "t.txt", tmp_path / "out")[0] == 0
    rc, err = run(capsys, "text", tmp_path / "t.txt", tmp_path / "out")
    assert rc == 2 and "already holds shards" in err[-1]


def test_missing_input_is_one_line_error(tmp_path, capsys):
    rc, err = run(capsys, "coco", tmp_path / "nope.json", tmp_path / "out")
    assert rc == 2 and err == [f"error: {tmp_path / 'nope.json'}: COCO captions JSON not found"]


@pytest.mark.parametrize("where, problem", [
    ("a-file", "exists and is not a folder"),
    ("a-file/out", "cannot write there (Not a directory)"),
    ("/sys/unimodal_free_no_write/out", "cannot write there ("),  # sysfs: not writable, not even by root
])
def test_unusable_output_folder_is_one_line_error(tmp_path, capsys, where, problem):
    write(tmp_path / "t.txt", "one\ntwo\n")
    write(tmp_path / "a-file", "not a folder")
    out = tmp_path / where
    rc, err = run(capsys, "text", tmp_path / "t.txt", out)
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: output folder {out}: {problem}"), err


@pytest.mark.parametrize("flag, value", [
    ("--maxsize", "1e400"), ("--maxsize", "nan"), ("--maxsize", "inf"), ("--maxsize", "1.2.3"), ("--maxsize", "e"),
    ("--maxsize", "-5"), ("--maxsize", "0"), ("--maxcount", "0"), ("--maxcount", "-1"), ("--maxcount", "nan"),
    ("--maxcount", "1e400"),
])
def test_bad_numeric_flag_is_a_usage_error_naming_it(tmp_path, capsys, flag, value):
    write(tmp_path / "t.txt", "one\n")
    with pytest.raises(SystemExit) as info:
        shards.main(["text", str(tmp_path / "t.txt"), str(tmp_path / "out"), flag, value])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------- unit pieces

def test_keys_are_sanitised_and_unique():
    make = KeyMaker()
    assert make("a/b.c") == "a_b_c"
    assert make("../../etc/passwd") == "etc_passwd"
    assert make("a_b_c") == "a_b_c-1"
    assert make("a/b c") == "a_b_c-2"
    assert make("...") == "sample"
    long = make("x" * 300)
    assert len(long) <= MAX_KEY_LEN and "." not in long and "/" not in long


def test_media_validation():
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 255, 255))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    rgb = decode_image_rgb(buf.getvalue())
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 0)) == (0, 0, 255)
    with pytest.raises(BadMedia, match="limit"):
        open_image(png_claiming(8193, 8))
    with pytest.raises(BadMedia, match="cannot decode image"):
        open_image(png_claiming(8192, 1))  # within limits, but the pixel data does not match the header
    wav, sr, fmt = read_audio(audio_bytes("OGG", sr=8000))
    assert fmt == "OGG" and sr == 8000 and wav.dtype == np.float32 and wav.ndim == 1


# ----------------------------------------------------------------------- hostile inputs


def test_writer_refuses_devices_oversized_and_long_lines(tmp_path, capsys):
    base = tmp_path / "data"
    write(base / "ok.png", image_bytes("PNG"))
    big = base / "sparse.wav"
    with open(big, "wb") as f:  # 3 MB that occupy no disk: read whole, they would cost 3 MB of memory each
        f.truncate(3_000_000)
    write(base / "long.txt", "x" * (MAX_TEXT_BYTES + 10))
    lines = [
        {"key": "zero", "image": "/dev/zero"},
        {"key": "sparse", "speech": "sparse.wav"},
        {"key": "cap", "image": "ok.png", "text": {"path": "long.txt"}},
        {"key": "fine", "image": "ok.png"},
    ]
    man = write(base / "m.jsonl", "\n".join(json.dumps(l) for l in lines) + "\n" + "y" * (MAX_TEXT_BYTES + 5) + "\n")
    rc, err = run(capsys, "manifest", man, tmp_path / "out", "--max-input-bytes", "1MB")
    assert rc == 0 and list(read_shards(tmp_path / "out")) == ["fine"]
    skips = [l for l in err if l.startswith("skip")]
    assert skips == [
        "skip /dev/zero: not a regular file",
        f"skip {big}: 3000000 bytes > the 1000000-byte limit (--max-input-bytes)",
        f"skip {base / 'long.txt'}: {MAX_TEXT_BYTES + 10} bytes > the {MAX_TEXT_BYTES}-byte limit "
        "(caption files)",
        f"skip {man}:5: line longer than {MAX_TEXT_BYTES} characters",
    ], err


def test_manifest_root_confines_inputs(tmp_path, capsys):
    root = tmp_path / "root"
    write(root / "in" / "ok.png", image_bytes("PNG"))
    secret = write(tmp_path / "secret.txt", "private words")
    (root / "in" / "link.txt").symlink_to(secret)
    (root / "in" / "inside.txt").symlink_to(root / "in" / "ok.png")  # a symlink that stays inside is fine
    lines = [
        {"key": "abs", "text": {"path": str(secret)}},
        {"key": "dots", "text": {"path": "in/../../secret.txt"}},
        {"key": "link", "text": {"path": "in/link.txt"}},
        {"key": "ok", "image": "in/ok.png"},
    ]
    man = write(tmp_path / "untrusted.jsonl", "\n".join(json.dumps(l) for l in lines) + "\n")
    rc, err = run(capsys, "manifest", man, tmp_path / "out", "--root", root)
    assert rc == 0 and list(read_shards(tmp_path / "out")) == ["ok"]
    skips = [l for l in err if l.startswith("skip")]
    assert skips == [
        f'skip {man}:1: "text": absolute path {str(secret)!r} refused under --root',
        f'skip {man}:2: "text": ".." in \'in/../../secret.txt\' refused under --root',
        f'skip {man}:3: "text": \'in/link.txt\' leaves --root {root} through a symlink',
    ], err
    # Without --root the same manifest copies the private file into a shard (documented).
    rc, _ = run(capsys, "manifest", man, tmp_path / "out2")
    assert rc == 0 and read_shards(tmp_path / "out2")["abs"]["txt"] == b"private words"


def test_images_layout_takes_same_named_recordings(tmp_path, capsys):
    """A recording beside a picture is that sample's speech; one with no picture is skipped, named and counted."""
    src = tmp_path / "in"
    write(src / "a.png", image_bytes("PNG", seed=1))
    write(src / "a.txt", "a red square")
    write(src / "a.wav", audio_bytes("WAV"))
    write(src / "sub/b.jpg", image_bytes("JPEG", seed=2))
    write(src / "sub/b.flac", audio_bytes("FLAC"))
    write(src / "lonely.wav", audio_bytes("WAV"))
    rc, err = run(capsys, "images", src, tmp_path / "out")
    assert rc == 0, err
    got = read_shards(tmp_path / "out")
    assert set(got) == {"a", "sub_b"}
    assert got["a"]["wav"] == (src / "a.wav").read_bytes() and got["a"]["txt"] == b"a red square"
    assert got["sub_b"]["flac"] == (src / "sub/b.flac").read_bytes()
    assert any(line.startswith(f"skip {src / 'lonely.wav'}: recording with no same-named picture") and "manifest" in line
               for line in err), err
    assert "image+speech 1, image+speech+text 1" in err[-1] and "skipped 1" in err[-1]
