"""Label classifiers on frozen features: linear probe, k-NN, zero-shot, the trainer's cheap variant and
``python -m unimodal_free.eval probe|zeroshot`` on tiny labelled shards."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, error_line, tiny_cfg, tiny_model
from unimodal_free.batch import collate_elements
from unimodal_free.data.reading.elements import text_elements
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.eval.classification import label_metrics
from unimodal_free.eval.embed import EmbeddingSet
from unimodal_free.eval.features import parse_features
from unimodal_free.eval.heldout_labels import heldout_label_metrics
from unimodal_free.eval.label_report import clip_benchmark_records, format_heldout_labels, format_label_table, side_by_side
from unimodal_free.eval.probe import fewshot_subset, knn_classify, knn_cross_validated, logistic_probe, probe_embeddings
from unimodal_free.eval.probe_cli import main
from unimodal_free.eval.zeroshot import ClassSpec, demo_class_specs, load_class_specs, zeroshot_embeddings
from unimodal_free.model import pooled_embedding

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")


def clusters(n_per_class: int, classes, dim: int = 16, noise: float = 0.05, seed: int = 0):
    """Rows around one orthogonal centroid per class: (n, dim) features, labels, (C, dim) centroids."""
    rng = np.random.default_rng(seed)
    centroids = np.eye(dim)[: len(classes)]
    y = [c for c in classes for _ in range(n_per_class)]
    x = np.stack([centroids[classes.index(c)] for c in y]) + noise * rng.standard_normal((len(y), dim))
    return x.astype(np.float32), y, centroids


# ---------------------------------------------------------------- known cases


def test_separable_features_are_classified_perfectly():
    x_train, y_train, _ = clusters(30, list(SHAPES[:4]))
    x_test, y_test, _ = clusters(10, list(SHAPES[:4]), seed=1)
    for result in (logistic_probe(x_train, y_train, x_test, y_test), knn_classify(x_train, y_train, x_test, y_test)):
        assert result["top1"] == 1.0 and result["mean_per_class_recall"] == 1.0
        assert result["chance"] == 0.25 and result["majority"] == 0.25 and result["top5"] is None  # 4 classes
    probe = logistic_probe(x_train, y_train, x_test, y_test)
    assert probe["C"] in [float(c) for c in np.logspace(-6, 6, 13)] and probe["C_chosen_by"].startswith("validation")
    assert len(probe["val_top1"]) == 13
    assert knn_cross_validated(np.concatenate([x_train, x_test]), y_train + y_test)["top1"] == 1.0
    two_train, two_labels, _ = clusters(30, list(SHAPES[:2]))  # two classes: sklearn's binary decision function
    two_test, two_test_labels, _ = clusters(10, list(SHAPES[:2]), seed=1)
    assert logistic_probe(two_train, two_labels, two_test, two_test_labels)["top1"] == 1.0


def test_random_features_and_labels_give_chance():
    """Held-out labels drawn independently of everything: whatever a classifier predicts, each row is right
    with probability 1/4, so top-1 is Binomial(n, 1/4) / n, std sqrt(1/4 * 3/4 / n) = 0.0097 for n = 2000;
    4 std (0.039) is the tolerance (a false failure about once in 16000 seeds)."""
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c", "d"]
    x_train, x_test = rng.standard_normal((400, 16)), rng.standard_normal((2000, 16))
    y_train, y_test = list(rng.choice(classes, 400)), list(rng.choice(classes, 2000))
    tolerance = 4 * math.sqrt(0.25 * 0.75 / 2000)
    for result in (logistic_probe(x_train, y_train, x_test, y_test), knn_classify(x_train, y_train, x_test, y_test),
                   knn_cross_validated(x_test, y_test)):
        assert abs(result["top1"] - 0.25) < tolerance, result["top1"]
        assert result["chance"] == 0.25 and result["classes"] == 4


def test_metrics_count_unknown_labels_as_wrong_and_report_floors():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    out = label_metrics(scores, ["x", "y"], ["x", "y", "y", "z"], majority="y")
    assert out["top1"] == 0.5 and out["unknown_rows"] == 1
    assert out["mean_per_class_recall"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)  # classes x, y, z of the truth
    assert out["chance"] == 0.5 and out["majority"] == 0.5 and out["majority_class"] == "y"


def test_fewshot_takes_k_per_class_reproducibly():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2
    picked = fewshot_subset(labels, 3, seed=0)
    assert sorted(labels[i] for i in picked) == ["a"] * 3 + ["b"] * 3 + ["c"] * 2  # c has only two
    assert list(picked) == list(fewshot_subset(labels, 3, seed=0))
    assert list(picked) != list(fewshot_subset(labels, 3, seed=1))


def test_zeroshot_with_class_text_embeddings_at_the_centroids_is_perfect():
    x, y, centroids = clusters(10, list(SHAPES), noise=0.1)
    spec = ClassSpec("shape", SHAPES, ("a {c}", "a picture of a {c}"))

    def embed_texts(prompts):  # every template of a class embeds to its centroid
        return torch.tensor(np.stack([centroids[[s for s in SHAPES if p.endswith(s)][0] == np.array(SHAPES)][0]
                                      for p in prompts]))

    emb = labelled_set({"image": (x, y)}, "shape")
    result = zeroshot_embeddings(emb, [spec], embed_texts)["image"]["shape"]
    assert result["top1"] == 1.0 and result["top5"] == 1.0 and result["mean_per_class_recall"] == 1.0
    assert result["chance"] == 1 / 8 and result["templates"] == 2


def labelled_set(rows: dict, field: str) -> EmbeddingSet:
    """An EmbeddingSet whose rows of each modality are (features, labels of ``field``)."""
    emb = EmbeddingSet()
    for m, (x, y) in rows.items():
        emb.embeddings[m] = torch.nn.functional.normalize(torch.tensor(np.asarray(x), dtype=torch.float32), dim=-1)
        emb.pair_ids[m] = torch.arange(len(y))
        emb.keys[m] = [f"k{i}" for i in range(len(y))]
        emb.labels[m] = [{field: v} for v in y]
    return emb


def test_probe_embeddings_and_trainer_metrics_per_modality_and_field():
    x, y, centroids = clusters(12, list(SHAPES[:3]))
    train, heldout = labelled_set({"image": (x, y), "text": (x, y)}, "shape"), labelled_set({"image": (x, y)}, "shape")
    heldout.labels["image"][0] = {}  # a row without labels is left out of that field
    results = probe_embeddings(train, heldout)
    assert set(results) == {"image"} and set(results["image"]["shape"]) == {"logistic", "knn"}
    assert results["image"]["shape"]["knn"]["rows"] == len(y) - 1

    spec = ClassSpec("shape", SHAPES[:3], ("a {c}",))
    lookup = {f"a {s}": centroids[i] for i, s in enumerate(SHAPES[:3])}
    flat = heldout_label_metrics(heldout, lambda prompts: np.stack([lookup[p] for p in prompts]), [spec])
    assert flat == {"image_shape_knn_top1": 1.0, "image_shape_zeroshot_top1": 1.0}
    assert heldout_label_metrics(heldout) == {"image_shape_knn_top1": 1.0}  # no prompt embedder: k-NN only


def test_clip_benchmark_records_have_its_keys():
    x, y, _ = clusters(8, list(SHAPES))
    probe = {"image": {"shape": {"logistic": logistic_probe(x, y, x, y), "knn": knn_classify(x, y, x, y)}}}
    zs = {"image": {"shape": {"zeroshot": label_metrics(np.eye(8)[[SHAPES.index(c) for c in y]], SHAPES, y, "circle")}}}
    models = {"trained": ("unimodal_free-teacher-head", "run/model.safetensors"),
              "random_init": ("unimodal_free-teacher-head", "random-init-seed0")}
    records = clip_benchmark_records(side_by_side({"trained": probe, "random_init": probe}), "heldout", models, "en",
                                     {"seed": 0, "fewshot_k": -1})
    records += clip_benchmark_records(side_by_side({"trained": zs}), "heldout", models, "en")
    assert [r["task"] for r in records] == ["linear_probe", "linear_probe", "zeroshot_classification"]  # no k-NN
    for r in records:
        assert set(r) == {"dataset", "model", "pretrained", "task", "metrics", "language"}
        assert r["dataset"] == "heldout#image/shape"
    assert {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall", "seed", "fewshot_k"} <= set(records[0]["metrics"])
    assert records[1]["pretrained"] == "random-init-seed0"
    assert set(records[2]["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert records[2]["metrics"]["acc1"] == 1.0
    table = format_label_table(side_by_side({"trained": probe, "random_init": probe}))
    assert "top1 % (random init)" in table and "100.0 (100.0)" in table


# ---------------------------------------------------------------- features and class files


def test_block_features_pool_that_blocks_output():
    tok = load_tokenizer("bytes")
    cfg = tiny_cfg()
    model = tiny_model(cfg, tok)
    batch = collate_elements([(text_elements(t, tok, 24), str(i), None) for i, t in enumerate(["a red", "blue sq"])])
    layers = model.encode(batch.parts)
    first = parse_features("block:0", cfg.model.num_blocks)(model, batch)["text"]
    assert torch.allclose(first, torch.nn.functional.normalize(layers[0].mean(1), dim=-1))
    head, pooled = (parse_features(s, 3)(model, batch)["text"] for s in ("head", "pooled"))
    assert head.shape[1] == cfg.objective.align_dim and pooled.shape[1] == cfg.model.d_model
    assert torch.allclose(pooled, pooled_embedding(model, batch, project=False)["text"])
    flat = parse_features("latents", 3)(model, batch)["text"]
    final = model.final(batch.parts)  # (2, N, D)
    assert flat.shape == (2, final.shape[1] * final.shape[2])
    assert torch.allclose(flat, torch.nn.functional.normalize(final.flatten(1), dim=-1))
    for bad, says in (("block:3", "blocks 0..2"), ("slots", "head, pooled, block:N or latents"), ("block:x", "not one of")):
        with pytest.raises(ValueError, match=says):
            parse_features(bad, 3)


def test_demo_templates_come_from_the_caption_grammar():
    specs = demo_class_specs()
    assert specs["shape"].templates == ("a {c}", "there is a {c}")
    assert "a {c} circle" in specs["colour"].templates and "there is a {c} star" in specs["size"].templates
    assert "{c} there is a circle" in specs["position"].templates
    assert specs["position"].prompts("at the top")[0] == "a circle at the top"


def test_class_file_errors_name_file_and_key(tmp_path):
    good = tmp_path / "classes.json"
    good.write_text(json.dumps([{"field": "shape", "classnames": ["circle", "square"], "templates": ["a {c}"]}]))
    assert load_class_specs(str(good))[0].prompts("circle") == ["a circle"]
    words = tmp_path / "words.json"  # label values mapped to the words the prompts use
    words.write_text(json.dumps({"field": "digit", "classnames": {"7": "seven", "1": "one"}, "templates": ["a {c}"]}))
    (spec,) = load_class_specs(str(words))
    assert spec.classnames == ("7", "1") and spec.prompts("7") == ["a seven"] and spec.prompts("1") == ["a one"]
    cases = [({"field": "shape", "classnames": ["a"], "templates": ["no slot"]}, "has no {c}"),
             ({"field": "shape", "classnames": [], "templates": ["a {c}"]}, "classnames must be a non-empty list"),
             ({"field": "shape", "classnames": ["a", "a"], "templates": ["a {c}"]}, "duplicates"),
             ({"field": "shape", "classnames": ["a"], "templates": ["{c}"], "extra": 1}, "unknown key 'extra'"),
             ("[", "not JSON")]
    for content, says in cases:
        bad = tmp_path / "bad.json"
        bad.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(ValueError, match=f"--classes {bad}.*{says}" if says != "has no {c}" else "has no"):
            load_class_specs(str(bad))


# ---------------------------------------------------------------- the CLI on tiny labelled shards

def test_probe_cli_writes_both_jsons(labelled, tmp_path, capsys):
    out, cb = tmp_path / "probe.json", tmp_path / "cb.json"
    rc = main("probe", ["--checkpoint", labelled["export"], "--train", labelled["train"], "--heldout", labelled["heldout"],
                        "--tokenizer", labelled["tok"], "--batch-size", "5", "--json", str(out),
                        "--clip-benchmark-json", str(cb), "--device", "cpu"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"image", "text"}
    for m in ("image", "text"):
        assert set(res["results"][m]) == {"colour", "shape"}
        for clf in ("logistic", "knn"):
            both = res["results"][m]["colour"][clf]
            assert set(both) == {"trained", "random_init"}
            assert both["trained"]["rows"] == 12 and both["trained"]["train_rows"] == 24
            assert both["trained"]["chance"] == 0.5
    meta = res["metadata"]
    assert meta["random_init_seed"] == 0 and meta["features"] == "head" and meta["step"] == 7
    assert meta["splits"]["heldout"]["rows"] == {"image": 12, "text": 12}
    records = json.loads(cb.read_text())
    assert len(records) == 2 * 2 * 2 and {r["task"] for r in records} == {"linear_probe"}  # model x modality x field
    assert {r["pretrained"] for r in records} == {meta["source"], "random-init-seed0"}
    assert "top1 % (random init)" in stdout and "image     colour" in stdout.replace("  ", "  ")


def test_zeroshot_cli_writes_both_jsons(labelled, tmp_path, capsys):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"field": "colour", "classnames": ["red", "blue"], "templates": ["a {c}", "{c} thing"]}))
    out, cb = tmp_path / "zs.json", tmp_path / "cb.json"
    rc = main("zeroshot", ["--checkpoint", labelled["export"], "--data", labelled["heldout"], "--classes", str(classes),
                           "--tokenizer", labelled["tok"], "--features", "block:1", "--no-random-init",
                           "--json", str(out), "--clip-benchmark-json", str(cb), "--device", "cpu"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"image"}  # text rows are not classified
    assert set(res["results"]["image"]["colour"]["zeroshot"]) == {"trained"}
    assert res["metadata"]["classes"]["colour"]["templates"] == ["a {c}", "{c} thing"]
    (record,) = json.loads(cb.read_text())
    assert record["task"] == "zeroshot_classification" and record["metrics"]["acc5"] is None  # 2 classes


@pytest.mark.parametrize("command, args, says", [
    ("probe", ["--train", "T"], "the following arguments are required: --heldout"),
    ("probe", ["--train", "{train}", "--heldout", "{heldout}", "--features", "block:9"], "latent blocks 0..2"),
    ("probe", ["--train", "{unlabelled}", "--heldout", "{heldout}", "--no-random-init"], "--train"),
    ("probe", ["--train", "{train}", "--heldout", "{heldout}", "--k", "0"], "--k: must be > 0"),
    ("zeroshot", ["--data", "{heldout}", "--classes", "missing.json"], "--classes missing.json: no such file"),
])
def test_usage_errors_are_one_line_exit_2(labelled, capsys, command, args, says):
    args = [a.format(**labelled) for a in args]
    try:
        rc = main(command, ["--checkpoint", labelled["export"], "--tokenizer", labelled["tok"], *args])
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        rc = exc.code
    assert rc == 2
    assert says in error_line(capsys)


def test_module_dispatches_subcommands_and_keeps_retrieval(tmp_path):
    env_run = [sys.executable, "-m", "unimodal_free.eval"]
    for argv, says in ((["probe", "--checkpoint", str(tmp_path / "none"), "--train", "a", "--heldout", "b"], "--checkpoint"),
                       (["--checkpoint", str(tmp_path / "none"), "--data", "a"], "--checkpoint")):
        proc = subprocess.run(env_run + argv, capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_heldout_label_lines_group_by_modality_and_field():
    table = format_heldout_labels({"image_shape_knn_top1": 0.5, "image_shape_zeroshot_top1": 0.25,
                                   "text_colour_name_knn_top1": 1.0})
    lines = table.splitlines()
    assert lines[0].split() == ["modality", "field", "k-NN", "zero-shot"] and len(lines) == 4
    assert lines[2].split() == ["image", "shape", "50.0", "25.0"]
    assert lines[3].split() == ["text", "colour_name", "100.0", "-"]  # a field name may hold underscores

