"""``python -m unimodal_free.search``: rankings equal a brute-force cosine of ``Embedder.embed``, the gallery
cache is reused, refreshed and rebuilt, hostile galleries are escaped or ignored, bad flags are one line."""

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from helpers import NUM_TRIPLES, assert_ranked_by, error_line, folder_gallery, triple
from unimodal_free.embedder import Embedder
from unimodal_free.search.__main__ import main
from unimodal_free.search.gallery import CACHE_DIR_NAME

ROW = re.compile(r"^\s*(\d+)  (-?\d\.\d{4})  ")


def hits(stdout: str) -> dict[str, list[tuple[float, str]]]:
    """{modality: [(score, file), ...]} from the printed blocks (file: the last column)."""
    out, current = {}, None
    for line in stdout.splitlines():
        if m := re.match(r"^(image|speech|text): top \d+ of \d+$", line):
            current = out.setdefault(m.group(1), [])
        elif current is not None and (m := ROW.match(line)):
            current.append((float(m.group(2)), re.split(r"\s{2,}", line.strip())[-1]))
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    rc = main([*map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def embed_calls(monkeypatch):
    """Rows the model embeds, per call of Embedder.embed_elements (the query is one row, a gallery more)."""
    calls = []
    original = Embedder.embed_elements

    def counted(self, elements, batch_size=None):
        calls.append(len(elements))
        return original(self, elements, batch_size)

    monkeypatch.setattr(Embedder, "embed_elements", counted)
    return calls


def test_folder_ranking_is_the_brute_force_cosine_of_embed(setup, tmp_path, capsys):
    gallery = folder_gallery(setup, tmp_path / "gallery")
    query = triple(setup, 2)[0]  # img2.png: also in the gallery
    rc, out, _ = run(capsys, "--model", setup["export"], "--gallery", gallery, "--image", query, "--top-k", 100)
    assert rc == 0
    got = hits(out)
    embedder = Embedder.load(setup["export"])
    q = embedder.embed([query])[0]
    files = sorted(p.name for p in gallery.iterdir() if p.is_file())
    by_modality = {"image": [f for f in files if f.endswith(".png")], "text": [f for f in files if f.endswith(".txt")],
                   "speech": [f for f in files if f.endswith((".flac", ".ogg"))]}
    assert set(got) == set(by_modality)
    for m, names in by_modality.items():
        scores = (embedder.embed([gallery / n for n in names]) @ q).tolist()
        assert_ranked_by([(f, s) for s, f in got[m]], dict(zip(names, scores)), m)
    assert got["image"][0] == (pytest.approx(1.0, abs=1e-4), "img2.png")  # the query's own file ranks first


def test_shard_items_find_themselves_and_name_their_members(setup, capsys):
    shards = setup["shards"][0]
    image, speech, caption, key = triple(setup, 4)
    for flag, value, modality, member in (("--image", image, "image", f"{key}.png"),
                                          ("--speech", speech, "speech", f"{key}.{speech.suffix[1:]}"),
                                          ("--text", caption, "text", f"{key}.txt")):
        rc, out, _ = run(capsys, "--model", setup["export"], "--gallery", shards, flag, value, "--modality", modality)
        assert rc == 0
        got = hits(out)
        assert list(got) == [modality]
        score, file = got[modality][0]
        assert score == pytest.approx(1.0, abs=1e-4) and file.endswith(f".tar:{member}"), out
    assert f"{NUM_TRIPLES * 3} items (image {NUM_TRIPLES}, speech {NUM_TRIPLES}, text {NUM_TRIPLES})" in out


def test_cache_is_reused_refreshed_per_file_and_keyed_by_the_model(setup, tmp_path, capsys, embed_calls):
    gallery = folder_gallery(setup, tmp_path / "gallery")
    args = ["--model", setup["export"], "--gallery", gallery, "--text", "a red thing"]
    rc, first, _ = run(capsys, *args)
    assert rc == 0 and sum(embed_calls[1:]) == 3 * NUM_TRIPLES  # the query, then every gallery item
    cache = gallery / CACHE_DIR_NAME
    index = next(cache.glob("*.json"))
    tensors = list(cache.glob("*.safetensors"))
    assert len(tensors) == 1
    stamp = (index.stat().st_mtime_ns, tensors[0].stat().st_mtime_ns)

    embed_calls.clear()
    rc, second, _ = run(capsys, *args)
    assert rc == 0 and embed_calls == [1]  # only the query
    assert (index.stat().st_mtime_ns, tensors[0].stat().st_mtime_ns) == stamp
    assert hits(second) == hits(first)
    assert f"0 items embedded from 0 of {3 * NUM_TRIPLES} files" in second

    (gallery / "say1.txt").write_text("a red thing\nsecond line\n")  # one file changes: only it is read again
    embed_calls.clear()
    rc, third, _ = run(capsys, *args)
    assert rc == 0 and sum(embed_calls[1:]) == 2 and f"2 items embedded from 1 of {3 * NUM_TRIPLES} files" in third
    assert hits(third)["text"][0] == (pytest.approx(1.0, abs=1e-4), "say1.txt")
    assert [p.name for p in cache.glob("*.safetensors")] != [tensors[0].name]  # the old tensor file is gone
    assert len(list(cache.glob("*.safetensors"))) == 1

    embed_calls.clear()
    rc, student, _ = run(capsys, *args, "--which", "student")  # another model: its own cache, built anew
    assert rc == 0 and sum(embed_calls[1:]) == 3 * NUM_TRIPLES + 1
    assert len(list(cache.glob("*.json"))) == 2 and hits(student) != hits(third)


@pytest.mark.parametrize("damage", ["truncate", "shape", "index"])
def test_a_corrupt_cache_is_rebuilt_with_one_warning(setup, tmp_path, capsys, embed_calls, damage):
    gallery = folder_gallery(setup, tmp_path / "gallery")
    args = ["--model", setup["export"], "--gallery", gallery, "--text", "a blue thing"]
    rc, first, _ = run(capsys, *args)
    cache = gallery / CACHE_DIR_NAME
    index, tensor = next(cache.glob("*.json")), next(cache.glob("*.safetensors"))
    if damage == "truncate":
        tensor.write_bytes(tensor.read_bytes()[:100])
    elif damage == "shape":  # a well-formed file of the wrong shape under the indexed name and build
        from safetensors.torch import save_file

        build = json.loads(index.read_text())["build"]
        save_file({"embeddings": torch.ones(2, 3)}, str(tensor), metadata={"build": build})
    else:
        data = json.loads(index.read_text())
        data["sources"][0]["rows"] = 1000
        index.write_text(json.dumps(data))
    embed_calls.clear()
    rc, again, err = run(capsys, *args)
    assert rc == 0 and hits(again) == hits(first)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: search cache unusable, rebuilding it: "), err
    assert sum(embed_calls[1:]) == 3 * NUM_TRIPLES
    embed_calls.clear()
    assert run(capsys, *args)[0] == 0 and embed_calls == [1]  # rebuilt: reused from now on


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_hostile_names_are_escaped_and_links_out_ignored(setup, tmp_path, capsys):
    gallery = folder_gallery(setup, tmp_path / "gallery")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(triple(setup, 0)[0], outside / "secret.png")
    (gallery / "leak.png").symlink_to(outside / "secret.png")
    (gallery / "leakdir").symlink_to(outside, target_is_directory=True)
    (gallery / "inside.png").symlink_to(gallery / "img1.png")  # a link inside the gallery is an item
    hostile = '<script>alert("x")</script>'
    (gallery / f"{hostile.replace('/', '_')}.txt").write_text(f"{hostile} \x1b[31mred\n")
    sheet = tmp_path / "sheet.html"
    rc, out, _ = run(capsys, "--model", setup["export"], "--gallery", gallery, "--image", outside / "secret.png",
                     "--top-k", 50, "--html", sheet)
    assert rc == 0
    files = {f for found in hits(out).values() for _, f in found}
    assert "inside.png" in files and not any("leak" in f or "secret" in f for f in files)
    assert "\x1b" not in out  # a caption's escape sequence is not sent to the terminal
    page = sheet.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    parsed = Elements()
    parsed.feed(page)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags
    images = [a["src"] for t, a in parsed.tags if t == "img"]
    audio = [a["src"] for t, a in parsed.tags if t == "audio"]
    assert len(images) == NUM_TRIPLES + 1 + 1 and all(s.startswith("data:image/png;base64,") for s in images)  # + query
    assert len(audio) == NUM_TRIPLES and all(s.startswith("data:audio/wav;base64,") for s in audio)
    assert any(hostile in t for t in parsed.text)  # shown as text, not markup


def test_cache_goes_to_the_user_cache_when_the_gallery_cannot_take_it(setup, tmp_path, capsys, monkeypatch):
    gallery = folder_gallery(setup, tmp_path / "gallery")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (gallery / CACHE_DIR_NAME).symlink_to(elsewhere, target_is_directory=True)  # never written through
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rc, out, _ = run(capsys, "--model", setup["export"], "--gallery", gallery, "--text", "a thing")
    assert rc == 0 and not any(elsewhere.iterdir())
    assert len(list((tmp_path / "home" / ".cache" / "unimodal_free" / "search").glob("*/*.json"))) == 1
    assert str(tmp_path / "home") in out


def test_bad_flags_and_inputs_are_one_line(setup, tmp_path, capsys):
    gallery = folder_gallery(setup, tmp_path / "gallery")
    model = setup["export"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("nothing to rank")
    broken = tmp_path / "broken.png"
    broken.write_bytes(triple(setup, 0)[0].read_bytes()[:60])
    images_only = tmp_path / "images"
    images_only.mkdir()
    shutil.copy(triple(setup, 0)[0], images_only / "a.png")
    cases = [
        (["--model", tmp_path / "nope", "--gallery", gallery, "--text", "x"], f"--model {tmp_path / 'nope'}: no such"),
        (["--model", model, "--gallery", tmp_path / "gone", "--text", "x"], f"--gallery {tmp_path / 'gone'}: no such"),
        (["--model", model, "--gallery", empty, "--text", "x"], f"--gallery {empty}: empty"),
        (["--model", model, "--gallery", gallery, "--image", tmp_path / "q.png"], "file not found"),
        (["--model", model, "--gallery", gallery, "--image", triple(setup, 0)[1]], "a speech file; --image takes .jpg .jpeg .png .webp"),
        (["--model", model, "--gallery", gallery, "--image", broken], f"{broken}: image:"),
        (["--model", model, "--gallery", images_only, "--text", "x", "--modality", "text"],
         "--modality text: the gallery has no text items (it has image)"),
        (["--model", model, "--gallery", gallery, "--text", "x", "--top-k", "0"], "--top-k: must be > 0"),
        (["--model", model, "--gallery", gallery, "--text", "x", "--image", broken], "not allowed with argument"),
        (["--model", model, "--gallery", gallery, "--text", "x", "--html", tmp_path / "no" / "s.html"], "its folder does not exist"),
    ]
    for args, expected in cases:
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:
            rc = exc.code
        assert rc == 2, args
        line = error_line(capsys)
        assert expected in line, (args, line)
