"""``python -m unimodal_free.eval.query`` on raw files: the same embeddings as the retrieval eval, in input order."""

import json

import numpy as np
import pytest
import torch

from helpers import NUM_TRIPLES, error_line, triple
from unimodal_free.config import Source
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.eval import evaluate
from unimodal_free.eval.query import Item, JointEmbedder, expand_items, main
from unimodal_free.store.rebuild import load_model
from unimodal_free.store.weights import load_weights


def test_query_embeds_like_the_retrieval_eval(setup):
    """Raw files and captions, mixed order, small batches == what evaluate() embeds from the shards."""
    weights = load_weights(setup["export"])
    tok = load_tokenizer(str(setup["tok"]))
    cfg = weights.cfg
    teacher = load_model(weights, "teacher", tok.vocab_size, "x")
    out = evaluate(teacher, make_eval_loader(cfg.data, [Source(path=setup["shards"][0])], tok, cfg.train.micro_batch_size), cfg.eval, cfg.data, tok, "cpu",
                   projector=False)
    emb = out.embeddings

    embedder = JointEmbedder.load(str(setup["export"]))
    assert embedder.which == "teacher" and embedder.step == 7
    files, texts, expected_files, expected_texts = [], [], [], []
    for i in reversed(range(NUM_TRIPLES)):  # not shard order
        image, speech, caption, key = triple(setup, i)
        files += [speech, image]  # modalities interleaved: rows are regrouped inside a batch
        texts.append(caption)
        for m in ("speech", "image"):
            expected_files.append(emb.embeddings[m][emb.keys[m].index(key)])
        expected_texts.append(emb.embeddings["text"][emb.keys["text"].index(key)])
    got_files = embedder.embed_files(files)
    got_texts = embedder.embed_texts(texts)
    assert got_files.shape == (2 * NUM_TRIPLES, emb.embeddings["image"].shape[1])
    torch.testing.assert_close(got_files, torch.stack(expected_files), rtol=0, atol=1e-5)
    torch.testing.assert_close(got_texts, torch.stack(expected_texts), rtol=0, atol=1e-5)
    # Batching does not change a row: batches of 3 (rows of three modalities padded apart) give the same.
    items = expand_items([Item(str(f), is_file=True) for f in files] + [Item(t, is_file=False) for t in texts])
    torch.testing.assert_close(embedder.embed(items, batch_size=3), torch.cat([got_files, got_texts]), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_cli_prints_and_writes_the_similarity_matrix(setup, tmp_path, capsys):
    image, speech, caption, _ = triple(setup, 0)
    captions = tmp_path / "candidates.txt"
    captions.write_text("a red thing\n\n  a blue thing  \n")
    out = tmp_path / "sims.json"
    rc = main(["--checkpoint", str(setup["export"]), "--text", caption, "--file", str(image), str(captions),
               str(speech), "--json", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    res = json.loads(out.read_text())
    assert [(x["modality"], x["origin"]) for x in res["inputs"]] == [
        ("text", "text"), ("image", "file"), ("text", f"{captions}:1"), ("text", f"{captions}:2"), ("speech", "file")
    ]
    assert res["inputs"][3]["source"] == "a blue thing" and res["step"] == 7 and res["model"] == "teacher"
    sims = np.array(res["similarity"])
    assert sims.shape == (5, 5)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)
    np.testing.assert_allclose(sims, sims.T, atol=1e-6)
    assert (np.abs(sims) <= 1 + 1e-5).all() and not np.allclose(sims, 1.0)
    table = stdout.splitlines()[1:]
    assert len(table) == 6 and len({len(line) for line in table}) == 1  # header + 5 rows, aligned
    assert table[2].startswith("[1] image ") and "/raw/img0.png " in table[2]  # a long path keeps its name

    rc = main(["--checkpoint", str(setup["export"]), "--text", caption, "--file", str(image), "--model", "student",
               "--json", str(tmp_path / "student.json")])
    assert rc == 0
    student = json.loads((tmp_path / "student.json").read_text())
    assert student["model"] == "student" and student["similarity"][0][1] != pytest.approx(res["similarity"][0][1])


def test_bad_inputs_fail_in_one_line_naming_them(setup, tmp_path, capsys):
    image, _, caption, _ = triple(setup, 0)
    bmp = tmp_path / "photo.bmp"
    bmp.write_bytes(b"BM")
    # Inputs are checked before any checkpoint is read: the bogus checkpoint is never reached.
    assert main(["--checkpoint", str(tmp_path / "nope"), "--text", caption, "--file", str(bmp)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {bmp}: unknown suffix 'bmp'"), line
    assert main(["--checkpoint", str(tmp_path / "nope"), "--text", caption, "--file", str(tmp_path / "gone.png")]) == 2
    assert f"{tmp_path / 'gone.png'}: file not found" in error_line(capsys)
    assert main(["--checkpoint", str(setup["export"]), "--text", caption, "   "]) == 2
    assert "--text: empty caption" in error_line(capsys)
    broken = tmp_path / "broken.png"
    broken.write_bytes(image.read_bytes()[:60])
    assert main(["--checkpoint", str(setup["export"]), "--text", caption, "--file", str(broken)]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {broken}: image:"), line
    short = tmp_path / "click.wav"
    import soundfile as sf

    sf.write(short, np.zeros(100, dtype=np.float32), 16000)
    assert main(["--checkpoint", str(setup["export"]), "--text", caption, "--file", str(short)]) == 2
    assert error_line(capsys).startswith(f"error: {short}: speech: "), "too short for one analysis window"
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(setup["export"]), "--text", caption])
    assert exc.value.code == 2


def test_checkpoint_that_is_no_safetensors_export_is_one_line(setup, tmp_path, capsys):
    """The same check as the eval's: a pickle is refused from its header, never unpickled."""
    pickle = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(3)}, pickle)
    assert main(["--checkpoint", str(pickle), "--text", "a red circle", "a blue square"]) == 2
    assert error_line(capsys).startswith(f"error: --checkpoint {pickle}: not a safetensors export")
