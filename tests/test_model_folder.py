"""``unimodal_free.load``: the model folder a run leaves, old run artefacts, and every input kind through one route.

The fast tests use conftest's ``setup`` module fixture (writer-made raw files, a sentencepiece model trained on
their captions, an old-format export of a tiny model whose teacher != student); the slow one a real training
run (in process, 1 rank, real DeepSpeed engine, the demo shards) with a periodic eval.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import unimodal_free
from helpers import run_trainer, tiny_cfg, tiny_data, tiny_model, tmp_path_base, triple
from unimodal_free.config import config_to_dict
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.store.checkpoints import mark_complete, tag_for
from unimodal_free.store.export import save_export
from unimodal_free.store.rebuild import EvalError
from unimodal_free.store.weights import load_weights, run_model_folder
from unimodal_free.train.model_folder import TrainingSummary, write_model_folder


FOLDER_FILES = {"config.json", "tokenizer.model", "model.safetensors", "README.md"}


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(folder: Path) -> dict[str, str]:
    return {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in folder.iterdir()}


def private_tokenizer(setup, where: Path):
    """A copy of the fixture's tokenizer that this test may move or delete (the fixture's is shared)."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(setup["tok"], where / "tok.model")
    return load_tokenizer(str(where / "tok.model"))


def test_pil_image_and_image_tensors_embed_as_the_file(setup):
    """An RGBA PNG: the file, its PIL image, its (4, H, W) uint8 tensor and float [0, 1] tensor give the same
    rows and the same embedding, bit for bit (the file is decoded to a PIL image and takes the PIL route)."""
    embedder = unimodal_free.load(setup["export"], device="cpu")
    image = triple(setup, 1)[0]
    pil = Image.open(image)
    assert pil.mode == "RGBA"
    u8 = torch.from_numpy(np.array(pil)).permute(2, 0, 1)  # (4, H, W) uint8
    inputs = [Path(image), pil, u8, u8.float() / 255, u8.numpy()]
    rows = [embedder.preprocess(x) for x in inputs]
    below = embedder.preprocess((u8.float() - 0.3).clamp(min=0) / 255)  # floats round to the nearest 8-bit level
    for r in rows[1:] + [below]:
        assert len(r) == 1 and torch.equal(r[0].values, rows[0][0].values) and torch.equal(r[0].coords, rows[0][0].coords)
    size, p = embedder.preprocessing["image_size"], embedder.preprocessing["patch_size"]
    assert rows[0][0].values.shape == ((size // p) ** 2, p * p * 3)
    alone = torch.cat([embedder.embed([x]) for x in inputs])  # (5, D), each input in a batch of its own
    assert all(torch.equal(alone[i], alone[0]) for i in range(1, 5))
    # In one batch the rows are the same bits, but the last of 5 identical rows came out 6e-8 off (measured):
    # the CPU matmul kernels treat the rows of a block tail differently, not the inputs.
    torch.testing.assert_close(embedder.embed(inputs), alone, rtol=0, atol=1e-6)
    assert torch.equal(embedder.embed_images([str(image)]), alone[:1])
    # The file route is the query CLI's: it embeds as the retrieval eval does (test_eval_query).
    assert torch.equal(unimodal_free.load(setup["export"]).embed_files([image]), alone[:1])


def test_exif_orientation_applies_to_files_and_pil_images_alike(setup, tmp_path):
    embedder = unimodal_free.load(setup["export"], device="cpu")
    pixels = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif.tobytes())
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    z = [embedder.embed([x]) for x in (tmp_path / "turned.png", Image.open(tmp_path / "turned.png"),
                                       tmp_path / "plain.png")]
    assert torch.equal(z[0], z[1]) and not torch.allclose(z[0], z[2], atol=1e-3)


def test_waveform_pairs_embed_as_the_wav_file(setup, tmp_path):
    """(waveform, rate) as numpy float64, torch float32, int16 PCM, and (C, T) stereo == the WAV files,
    at a rate that needs resampling (22.05 kHz)."""
    embedder = unimodal_free.load(setup["export"], device="cpu")
    wave, _ = sf.read(triple(setup, 2)[1], dtype="float32")  # (T,) the fixture's clip
    sf.write(tmp_path / "mono.wav", wave, 22050, subtype="PCM_16")
    stereo = np.stack([wave, 0.5 * wave[::-1]], axis=1)  # (T, 2): two different channels
    sf.write(tmp_path / "stereo.wav", stereo, 22050, subtype="PCM_16")
    mono64, sr = sf.read(tmp_path / "mono.wav")  # float64 (T,)
    pcm, _ = sf.read(tmp_path / "mono.wav", dtype="int16")
    st, _ = sf.read(tmp_path / "stereo.wav", dtype="float32")  # (T, 2)
    inputs = [tmp_path / "mono.wav", (mono64, sr), (torch.from_numpy(mono64).float(), sr), (pcm, sr),
              tmp_path / "stereo.wav", (torch.from_numpy(st.T.copy()), sr)]
    z = torch.cat([embedder.embed([x]) for x in inputs])  # (6, D), one batch each (see the image test)
    assert sr == 22050
    assert all(torch.equal(z[i], z[0]) for i in (1, 2, 3)), "mono routes"
    assert torch.equal(z[5], z[4]) and not torch.allclose(z[4], z[0], atol=1e-3), "stereo: the decoder's downmix"
    torch.testing.assert_close(embedder.embed(inputs), z, rtol=0, atol=1e-6)
    rows = embedder.preprocess((mono64, sr))
    assert rows[0].values.shape[1] == embedder.preprocessing["n_mels"] * embedder.preprocessing["frames_per_element"]
    assert torch.equal(embedder.embed_speech([str(tmp_path / "mono.wav")]), z[:1])


def test_mixed_inputs_in_one_call_keep_their_order(setup):
    embedder = unimodal_free.load(setup["export"], device="cpu")
    image, speech, caption, _ = triple(setup, 0)
    wave, sr = sf.read(speech, dtype="float32")
    items = [caption, Path(speech), Image.open(image), (wave, sr), Path(image), "another caption"]
    one_by_one = torch.cat([embedder.embed([x]) for x in items])
    torch.testing.assert_close(embedder.embed(items, batch_size=2), one_by_one, rtol=0, atol=1e-6)
    assert torch.equal(embedder.embed_texts([caption]), embedder.embed([caption]))
    assert embedder.embed([]).shape == (0, embedder.embedding_dim) == (0, one_by_one.shape[1])


@pytest.mark.parametrize("bad, message", [
    (3, "input 0: int is not something to embed"),
    (torch.rand(8, 8, 3), "must be (C, H, W) with C in [1, 3, 4]: pass x.permute(2, 0, 1)"),
    (torch.rand(3, 8, 8) * 2 - 1, "a float image must hold values in [0, 1], got [-"),
    ((np.zeros(16000, dtype=np.float32), 16000.0), "sample rate must be an int (Hz), got 16000.0"),
    ((np.full(16000, np.nan, dtype=np.float32), 16000), "speech: audio contains NaN or Inf samples"),
    (Path("photo.bmp"), "photo.bmp: unknown suffix 'bmp'"),
])
def test_inputs_it_cannot_take_are_one_line_naming_them(setup, bad, message):
    embedder = unimodal_free.load(setup["export"], device="cpu")
    with pytest.raises(EvalError) as exc:
        embedder.embed([bad])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_old_export_with_an_absolute_tokenizer_path_still_loads(setup, tmp_path):
    """Exports written before the model folder (student + teacher, the tokenizer named by an absolute path) load
    as a file and as a run directory, teacher and student; once the tokenizer is gone, ``tokenizer=`` points at a
    copy."""
    weights = load_weights(setup["export"])
    tok = private_tokenizer(setup, tmp_path / "tok")
    run = tmp_path / "old_run"
    run.mkdir()
    save_export(run / "model.safetensors", weights.student, weights.teacher, config_to_dict(weights.cfg), tok.reference, 7)
    assert load_weights(run).tokenizer_ref["path"] == str(tmp_path / "tok" / "tok.model")  # absolute, as before
    caption = triple(setup, 0)[2]
    teacher = unimodal_free.load(run, device="cpu")
    student = unimodal_free.load(run / "model.safetensors", device="cpu", model="student")
    assert (teacher.which, student.which, teacher.step) == ("teacher", "student", 7)
    assert not torch.equal(teacher.embed([caption]), student.embed([caption]))
    reference = unimodal_free.load(setup["export"], device="cpu").embed([caption])
    assert torch.equal(teacher.embed([caption]), reference)
    shutil.move(tmp_path / "tok" / "tok.model", tmp_path / "elsewhere.model")
    with pytest.raises(EvalError, match="which is missing here: pass --tokenizer PATH"):
        unimodal_free.load(run)
    moved = unimodal_free.load(run, device="cpu", tokenizer=str(tmp_path / "elsewhere.model"))
    assert torch.equal(moved.embed([caption]), reference)


def test_a_model_folder_stands_alone(setup, tmp_path, umask_022):
    """Written from an export: mode 644, a card; copied elsewhere with its tokenizer and source gone it loads
    (folder or file) to the same embeddings; it holds no student; an edited config.json is refused."""
    weights = load_weights(setup["export"])
    tok = private_tokenizer(setup, tmp_path / "tok")
    folder = write_model_folder(tmp_path / "run" / "model", weights.teacher, weights.cfg, tok, 7,
                                TrainingSummary(samples_seen=123, final_loss=0.5))
    assert {f.name for f in folder.iterdir()} == FOLDER_FILES
    assert set(modes(folder).values()) == {"0o644"}, modes(folder)
    assert [p.name for p in folder.parent.iterdir()] == ["model"]  # no temporary folder left
    image, speech, caption, _ = triple(setup, 0)
    items = [caption, Path(image), Path(speech)]
    reference = unimodal_free.load(setup["export"], device="cpu").embed(items)

    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "my-model")
    shutil.rmtree(tmp_path / "run")
    (tmp_path / "tok" / "tok.model").unlink()
    for source in (copy, copy / "model.safetensors"):
        embedder = unimodal_free.load(source, device="cpu")
        assert embedder.step == 7 and embedder.tokenizer.path == copy / "tokenizer.model"
        assert torch.equal(embedder.embed(items), reference)
    config = json.loads((copy / "config.json").read_text())
    assert config["format"] == "unimodal_free/model/1" and config["weights"] == "teacher"
    assert config["tokenizer"]["vocab_size"] == tok.vocab_size and config["modalities"]["text"]["vocab_size"] == tok.vocab_size
    assert config["preprocessing"]["image_size"] == weights.cfg.data.image_size
    with pytest.raises(EvalError, match="holds no student weights"):
        unimodal_free.load(copy, model="student")
    config["config"]["data"]["image_size"] *= 2  # as if it applied: the weights were trained at the stored size
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json: its config differs from the one stored in"):
        unimodal_free.load(copy)


def test_a_run_directory_loads_through_its_model_folder_once_the_tokenizer_moved(setup, tmp_path):
    """A run directory as training leaves it (the final export names the tokenizer by its absolute path, the model
    folder holds a copy): with the tokenizer moved away it still loads, the teacher from ``model/``; the student is
    only in the export, which needs the tokenizer."""
    weights = load_weights(setup["export"])
    tok = private_tokenizer(setup, tmp_path / "tok")
    run = tmp_path / "run"
    run.mkdir()
    save_export(run / "model.safetensors", weights.student, weights.teacher, config_to_dict(weights.cfg), tok.reference, 7)
    write_model_folder(run / "model", weights.teacher, weights.cfg, tok, 7)
    caption = triple(setup, 0)[2]
    reference = unimodal_free.load(setup["export"], device="cpu").embed([caption])
    shutil.move(tmp_path / "tok" / "tok.model", tmp_path / "moved.model")
    embedder = unimodal_free.load(run, device="cpu")
    assert (embedder.source, embedder.step, embedder.which) == (str(run / "model"), 7, "teacher")
    assert embedder.tokenizer.path == run / "model" / "tokenizer.model"
    assert torch.equal(embedder.embed([caption]), reference)
    assert weights.cfg.eval.model == "teacher" and unimodal_free.load(run, model=None).source == str(run / "model")
    with pytest.raises(EvalError, match="which is missing here: pass --tokenizer PATH"):
        unimodal_free.load(run, model="student")


def test_a_run_directory_with_a_newer_checkpoint_than_its_model_folder_is_read_from_the_run(setup, tmp_path):
    """A resumed run still training has complete checkpoints newer than its model folder: the folder would be stale,
    so the run's own latest weights are read; a checkpoint of the folder's step (or older) leaves the folder in use."""
    weights = load_weights(setup["export"])
    tok = private_tokenizer(setup, tmp_path / "tok")
    run = tmp_path / "run"
    run.mkdir()
    write_model_folder(run / "model", weights.teacher, weights.cfg, tok, 7)
    assert run_model_folder(run) == run / "model"  # no checkpoints: the folder
    for step, uses_folder in ((5, True), (7, True), (9, False)):
        tag_dir = run / "checkpoints" / tag_for(step)
        tag_dir.mkdir(parents=True)
        (tag_dir / "weights.bin").write_bytes(b"x" * step)
        mark_complete(tag_dir, step)
        assert (run_model_folder(run) == run / "model") is uses_folder, step
    incomplete = run / "checkpoints" / tag_for(11)  # no COMPLETE: a save cut short does not count
    incomplete.mkdir()
    assert run_model_folder(run) is None and run_model_folder(run / "model") is None


def test_captions_of_words_the_tokenizer_never_saw_warn_once_per_call(setup):
    """The fixture's tokenizer knows its corpus's captions ("a red thing number 0"): "dog" and "purple giraffe"
    still embed, with one warning naming them; known captions, images and a bytes-free call do not warn."""
    import warnings

    embedder = unimodal_free.load(setup["export"], device="cpu")
    image, _, caption, _ = triple(setup, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z = embedder.embed([caption, "dog", Path(image), "purple giraffe"])
    assert z.shape[0] == 4 and torch.isfinite(z).all()
    assert len(caught) == 1 and caught[0].category is UserWarning, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert message.startswith("2 of 3 caption(s) are mostly words this model's tokenizer (") and "'dog'" in message
    assert "'purple giraffe'" in message and repr(caption) not in message
    assert caught[0].filename == __file__  # points at the caller's line, not inside the package
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.embed([caption, Path(image)])


def test_the_card_says_what_the_model_was_trained_on(setup, tmp_path):
    """The card's "What it was trained on": the corpus and the rows seen per modality, and the caption vocabulary
    with its whole-word pieces when it is small; config.json keeps those words."""
    weights = load_weights(setup["export"])
    tok = load_tokenizer(str(setup["tok"]))
    summary = TrainingSummary(samples_seen=30, rows={"image": 10, "speech": 8, "text": 12})
    folder = write_model_folder(tmp_path / "model", weights.teacher, weights.cfg, tok, 7, summary)
    card = (folder / "README.md").read_text()
    section = card.split("## What it was trained on\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section[0] == (f"- **Corpus**: the demo corpus, `{weights.cfg.data.demo_dir}/train`; rows seen per modality: "
                          "image 10, speech 8, text 12."), section
    words = json.loads((folder / "config.json").read_text())["tokenizer"]["words"]
    assert words == tok.word_pieces(40) and "thing" in words
    assert section[1].startswith(f"- **Captions**: a sentencepiece vocabulary of {tok.vocab_size} pieces, a small closed "
                                 f"vocabulary; its most frequent whole-word pieces: {', '.join(words)}. "), section


def test_a_model_folder_with_overlapping_patches_embeds_them(setup, tmp_path):
    """A model trained with data.patch_stride: its folder records the stride, and a PIL image reaches the model
    as (image_size / stride)^2 elements of p x p pixels, the windows the reader cut in training."""
    from unimodal_free.config import config_from_dict
    from unimodal_free.data.reading.elements import image_elements
    from unimodal_free.model.joint import unwrap

    d = config_to_dict(tiny_cfg())
    d["data"]["patch_stride"] = 4  # image_size 32, patch_size 8: 64 overlapping elements, not 16
    cfg = config_from_dict(d)
    tok = load_tokenizer(str(setup["tok"]))
    folder = write_model_folder(tmp_path / "model", tiny_model(cfg, tok).state_dict(), cfg, tok, 3)
    embedder = unimodal_free.load(folder, device="cpu")
    assert embedder.preprocessing["patch_stride"] == 4
    seen = []
    adapter = unwrap(embedder.model).embed.adapters["image"]
    adapter.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))  # values (B, M, C)
    picture = Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    z = embedder.embed([picture])
    assert seen == [(1, (32 // 4) ** 2, 8 * 8 * 3)]
    assert z.shape == (1, embedder.embedding_dim) and torch.isfinite(z).all()
    rows = embedder.preprocess(picture)
    want = image_elements(picture, 32, 8, stride=4)  # resized and cropped as the reader does
    assert torch.equal(rows[0].values, want.values) and torch.equal(rows[0].coords, want.coords)


def test_the_query_and_eval_clis_read_a_model_folder(setup, tmp_path, capsys):
    from unimodal_free.eval.cli import main as eval_main
    from unimodal_free.eval.query import main

    weights = load_weights(setup["export"])
    folder = write_model_folder(tmp_path / "model", weights.teacher, weights.cfg, load_tokenizer(str(setup["tok"])), 7)
    image, _, caption, _ = triple(setup, 0)
    assert main(["--checkpoint", str(folder), "--text", caption, "--file", str(image)]) == 0
    assert capsys.readouterr().out.startswith(f"checkpoint {folder} (step 7, teacher")
    assert eval_main(["--checkpoint", str(folder), "--data", setup["shards"][0], "--max-samples", "4"]) == 0
    assert capsys.readouterr().out.startswith(f"checkpoint {folder} (step 7, teacher")


def test_an_older_run_converts_to_a_model_folder(setup, tmp_path, capsys):
    """``python -m unimodal_free.train.model_folder``: an old export (tokenizer named by a path that is gone)
    becomes a folder that loads alone; a bad source or a missing tokenizer is one line, exit 2."""
    from unimodal_free.train.model_folder import main

    weights = load_weights(setup["export"])
    tok = private_tokenizer(setup, tmp_path / "tok")
    save_export(tmp_path / "old.safetensors", weights.student, weights.teacher, config_to_dict(weights.cfg), tok.reference, 7)
    shutil.move(tmp_path / "tok" / "tok.model", tmp_path / "copy.model")
    assert main([str(tmp_path / "old.safetensors"), str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint") and "which is missing here" in err and "\n" not in err
    assert main([str(tmp_path / "nope"), str(tmp_path / "model")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such export file or run directory"
    assert not (tmp_path / "model").exists()
    assert main([str(tmp_path / "old.safetensors"), str(tmp_path / "model"), "--tokenizer",
                 str(tmp_path / "copy.model")]) == 0
    (tmp_path / "copy.model").unlink()
    caption = triple(setup, 0)[2]
    reference = unimodal_free.load(setup["export"], device="cpu").embed([caption])
    assert torch.equal(unimodal_free.load(tmp_path / "model", device="cpu").embed([caption]), reference)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "| steps | 7 of" in card and "No retrieval eval is recorded with these weights" in card


def test_import_stays_light():
    import subprocess
    import sys

    code = "import sys, unimodal_free; print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_a_training_run_leaves_a_model_folder_that_loads_alone(setup, tmp_path, monkeypatch, umask_022):
    """A real 2-step run with an eval at step 2: run/model/ holds 4 files, mode 644 (and so does the export);
    the card holds the steps and the eval's table (format_table of the same eval, rerun); the folder, copied
    away with the run dir and the tokenizer deleted, embeds as the run directory and its checkpoint did."""

    from unimodal_free.config import load_config
    from unimodal_free.data.loading.loader import make_eval_loader
    from unimodal_free.eval import evaluate
    from unimodal_free.eval.report import format_table

    data = tiny_data(tmp_path_base(tmp_path))
    (tmp_path / "tok").mkdir()
    shutil.copyfile(data / "tokenizer.model", tmp_path / "tok" / "tokenizer.model")
    rc = run_trainer(tmp_path, monkeypatch, "train.max_steps=2", "eval.every=2", "eval.max_samples=16",
                     f"data.tokenizer={tmp_path / 'tok' / 'tokenizer.model'}")
    assert rc == 0
    run = tmp_path / "run"
    folder = run / "model"
    assert {f.name for f in folder.iterdir()} == FOLDER_FILES
    assert set(modes(folder).values()) == {"0o644"} and modes(run)["model.safetensors"] == "0o644"
    card = (folder / "README.md").read_text()
    assert "# unimodal_free joint model, step 2" in card and "| steps | 2 of `train.max_steps` = 2 |" in card
    seen = json.loads((run / "checkpoints" / "step00000002" / "trainer_state.json").read_text())
    assert f"| samples seen | {seen['samples_seen']:,} rows over all ranks (1 rank(s)) |" in card
    assert sum(seen["rows_seen"].values()) == seen["samples_seen"] and set(seen["rows_seen"]) == {"image", "speech", "text"}
    assert "| final loss | " in card

    from_run = unimodal_free.load(run, device="cpu")
    from_ckpt = unimodal_free.load(run / "checkpoints" / "step00000002", device="cpu")
    cfg = load_config(run / "config.json")
    loader = make_eval_loader(cfg.data, cfg.data.heldout, from_run.tokenizer, cfg.train.micro_batch_size)
    out = evaluate(from_run.model, loader, cfg.eval, cfg.data, from_run.tokenizer, "cpu", max_samples=16, projector=False)
    assert "The run's last periodic eval, at step 2, of the teacher" in card
    assert f"```\n{format_table(out.results)}\n```" in card

    from unimodal_free.train.model_folder import main as convert

    assert convert([str(run), str(tmp_path / "converted")]) == 0  # from the run's latest checkpoint
    converted = (tmp_path / "converted" / "README.md").read_text()
    assert f"| samples seen | {seen['samples_seen']:,} rows" in converted and "No retrieval eval" in converted

    raw = setup["root"] / "raw"
    items = ["a red thing number 0", Path(raw / "img0.png"), Path(raw / "say0.flac"), Image.open(raw / "img1.png")]
    reference = from_run.embed(items)
    assert torch.equal(from_ckpt.embed(items), reference)
    copy = shutil.copytree(folder, tmp_path / "handed_over")
    shutil.move(tmp_path / "tok", tmp_path / "tok_moved")  # the run dir's checkpoints name it by its old path
    assert unimodal_free.load(run, device="cpu").source == str(folder)
    assert torch.equal(unimodal_free.load(run, device="cpu").embed(items), reference)
    shutil.rmtree(run)
    shutil.rmtree(tmp_path / "tok_moved")
    assert torch.equal(unimodal_free.load(copy, device="cpu").embed(items), reference)
    assert torch.equal(unimodal_free.load(tmp_path / "converted", device="cpu").embed(items), reference)


def test_the_card_opens_with_the_demo_heldout_when_own_data_had_none():
    """Own training shards with data.heldout unset: the card's first lines say its retrieval is on the demo's
    held-out split; with a held-out set of its own, or the demo for both, it does not."""
    from unimodal_free.config import config_from_dict
    from unimodal_free.train.model_card import model_card

    config = {"step": 20, "projected": True, "embedding_dim": 32, "library_version": "0", "preprocessing": {},
              "tokenizer": {"file": "tokenizer.model", "kind": "sentencepiece", "vocab_size": 64, "sha256": ""}}

    def first_lines(data: dict) -> str:
        cfg = config_from_dict({"data": {"demo_dir": "/demo", **data}})
        return "\n".join(model_card(config, cfg, TrainingSummary(), "m").splitlines()[:9])

    warning = ("**Held-out data: the retrieval figures below are on the demo corpus's held-out split "
               "(`/demo/heldout`), not on held-out data of this model's training corpus: `data.heldout` was unset.**")
    assert warning in first_lines({"train": [{"path": "shards/mine"}]})
    assert "Held-out data" not in first_lines({"train": [{"path": "shards/mine"}], "heldout": [{"path": "shards/ho"}]})
    assert "Held-out data" not in first_lines({})
