"""eval attributes: precision at k of text queries by label value, and the command that prints the targets."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import LABELLED_COLOURS, LABELLED_SHAPES, ROOT, error_line
from unimodal_free.eval.attributes import attribute_precision, label_ranker_precision, precision_at_k, template_queries
from unimodal_free.eval.attributes_cli import check_targets, report
from unimodal_free.eval.attributes_cli import main as attributes_main
from unimodal_free.eval.probe_cli import main as probe_main


def brute_precision(queries, query_labels, gallery, gallery_labels, field, k, query_ids=None, gallery_ids=None):
    """Per query, by hand: sort the allowed gallery rows by cosine (ties by index), count the first k."""
    precisions, chances = [], []
    for qi, (q, qlab) in enumerate(zip(queries.tolist(), query_labels)):
        allowed = [g for g in range(len(gallery)) if query_ids is None or int(gallery_ids[g]) != int(query_ids[qi])]
        scores = {g: sum(a * b for a, b in zip(q, gallery[g].tolist())) for g in allowed}
        ranked = sorted(allowed, key=lambda g: (-scores[g], g))[:k]
        precisions.append(sum(gallery_labels[g].get(field) == qlab[field] for g in ranked) / k)
        chances.append(sum(gallery_labels[g].get(field) == qlab[field] for g in allowed) / len(allowed))
    return sum(precisions) / len(precisions), sum(chances) / len(chances)


def test_precision_at_10_counts_the_ten_best_gallery_rows_of_each_query():
    # Query 0 scores gallery row g at 12 - g (row 0 best); query 1 the other way round (row 11 best).
    scores = torch.stack([12 - torch.arange(12.0), torch.arange(12.0)])  # (Q=2, G=12)
    gallery = ["red"] * 7 + ["blue"] * 4 + ["red"]  # rows 0-6 red, 7-10 blue, 11 red
    precision, chance = precision_at_k(scores, ["red", "blue"], gallery, k=10)
    # query 0: rows 0-9 hold 7 red; query 1: rows 11..2 hold the 4 blue rows
    assert precision.tolist() == pytest.approx([0.7, 0.4])
    assert chance.tolist() == pytest.approx([8 / 12, 4 / 12])
    own = torch.zeros(2, 12, dtype=torch.bool)
    own[0, 0] = own[1, 10] = True  # each query's own sample leaves the gallery: its window moves on by one row
    precision, chance = precision_at_k(scores, ["red", "blue"], gallery, k=10, exclude=own)
    assert precision.tolist() == pytest.approx([0.6, 0.3])  # query 0: rows 1-10; query 1: rows 11, 9..1
    assert chance.tolist() == pytest.approx([7 / 11, 3 / 11])
    # a row without the field never matches
    precision, _ = precision_at_k(scores[:1], ["red"], [None] + gallery[1:], k=10)
    assert precision.tolist() == pytest.approx([0.6])


def test_attribute_precision_matches_a_brute_force_count():
    gen = torch.Generator().manual_seed(1)  # a draw where P@9, P@10 and P@11 differ for both fields
    q, g, d = 7, 31, 5
    queries = F.normalize(torch.randn(q, d, generator=gen), dim=1)
    gallery = F.normalize(torch.randn(g, d, generator=gen), dim=1)
    colours, shapes = ("red", "blue", "green"), ("circle", "star")
    gallery_labels = [{"colour": colours[i % 3], "shape": shapes[(i // 3) % 2]} for i in range(g)]
    gallery_labels[4] = {"colour": "red"}  # no shape
    query_labels = [{"colour": colours[i % 3], "shape": shapes[i % 2]} for i in range(q)]
    query_ids, gallery_ids = torch.arange(q) * 4, torch.arange(g)  # query i's own sample is gallery row 4i
    got = attribute_precision(queries, query_labels, gallery, gallery_labels, ["colour", "shape"], 10,
                              query_ids, gallery_ids)
    for field in ("colour", "shape"):
        want = brute_precision(queries, query_labels, gallery, gallery_labels, field, 10, query_ids, gallery_ids)
        assert (got[field]["precision"], got[field]["chance"]) == pytest.approx(want)
        assert got[field]["queries"] == q
        # the data tells k = 10 from its neighbours, so a wrong k could not pass the line above
        others = {brute_precision(queries, query_labels, gallery, gallery_labels, field, k, query_ids, gallery_ids)[0]
                  for k in (9, 11)}
        assert want[0] not in others
    without_ids = attribute_precision(queries, query_labels, gallery, gallery_labels, ["colour"], 10)
    assert without_ids["colour"]["precision"] == pytest.approx(
        brute_precision(queries, query_labels, gallery, gallery_labels, "colour", 10)[0])


def test_label_ranker_takes_the_best_matching_rows_and_shares_the_places_of_a_tie():
    gallery = [{"colour": "red", "shape": "star"}, {"colour": "red", "shape": "ring"},
               {"colour": "blue", "shape": "star"}, {"colour": "blue", "shape": "ring"}, {"colour": "red"}]
    queries = [{"colour": "red", "shape": "star"}, {"colour": "blue"}]
    got = label_ranker_precision(queries, gallery, ["colour", "shape"], k=2)
    # query 0: row 0 matches both (in); rows 1, 2 and 4 match one each and share the last place: 1/3 each
    assert got["colour"][0].item() == pytest.approx((1 + 2 / 3) / 2)  # rows 0, 1 and 4 are red
    assert got["shape"][0].item() == pytest.approx((1 + 1 / 3) / 2)  # rows 0 and 2 are stars
    # query 1 names no shape: rows 2 and 3 (blue) are its two best, and its shape precision is NaN
    assert got["colour"][1].item() == pytest.approx(1.0) and torch.isnan(got["shape"][1])
    # its own sample excluded, query 0 keeps the three single matches for two places
    own = torch.tensor([[True, False, False, False, False], [False] * 5])
    got = label_ranker_precision(queries, gallery, ["colour", "shape"], k=2, exclude=own)
    assert got["colour"][0].item() == pytest.approx(2 / 3) and got["shape"][0].item() == pytest.approx(1 / 3)


def test_no_ranking_puts_more_matches_in_its_top_k_than_the_label_ranker():
    gen = torch.Generator().manual_seed(3)
    fields = ("colour", "shape", "size")
    values = {"colour": ("red", "blue", "green"), "shape": ("ring", "star"), "size": ("small", "big")}
    gallery_labels = [{f: values[f][(i // (1 + j)) % len(values[f])] for j, f in enumerate(fields)} for i in range(24)]
    query_labels = gallery_labels[:8]
    ids = torch.arange(24)
    bound = sum(attribute_precision(torch.eye(24)[:8], query_labels, torch.eye(24), gallery_labels, fields, 10,
                                    ids[:8], ids)[f]["label_ranker"] for f in fields)
    # the label ranker itself, as embeddings (one-hot per field), reaches the bound: it is a ranking too
    onehot = torch.tensor([[float(lab[f] == v) for f in fields for v in values[f]] for lab in gallery_labels])
    onehot = F.normalize(onehot, dim=1)
    got = attribute_precision(onehot[:8], query_labels, onehot, gallery_labels, fields, 10, ids[:8], ids)
    # rankings from the label embeddings blurred by noise, some near the bound: none goes past it
    sums = []
    for sigma in (0.05, 0.1, 0.2, 0.5, 1.0, 3.0):
        for _ in range(30):
            noisy = F.normalize(onehot + sigma * torch.randn(onehot.shape, generator=gen), dim=1)
            blurred = attribute_precision(noisy[:8], query_labels, noisy, gallery_labels, fields, 10, ids[:8], ids)
            sums.append(sum(blurred[f]["precision"] for f in fields))
    assert max(sums) <= bound + 1e-6 and max(sums) > 0.95 * bound and min(sums) < 0.8 * bound
    assert sum(got[f]["precision"] for f in fields) == pytest.approx(bound)


def test_template_queries_are_every_combination_of_the_values_present():
    labels = [{"colour": c, "shape": s, "size": "big"} for c in ("red", "blue") for s in ("ring", "star", "circle")]
    texts, query_labels = template_queries("a {colour} {shape}", labels)
    assert len(texts) == 6 and texts[0] == "a blue circle" and query_labels[0] == {"colour": "blue", "shape": "circle"}
    with pytest.raises(ValueError, match=r"--query-template .*no held-out row is labelled position \(fields: colour, "
                                         r"shape, size\)"):
        template_queries("a {shape} {position}", labels)
    for bad in ("a {0}", "a {colour!r}", "no slot", "a {colour"):
        with pytest.raises(ValueError, match="--query-template"):
            template_queries(bad, labels)


def test_targets_expand_every_figure_and_compare_with_at_least():
    results = {"probe": {"image": {"shape": {"gain": 0.31}, "position": {"gain": 0.05}}},
               "caption_queries": {"text_to_image": {"colour": {"precision": 0.9}, "shape": {"precision": 0.59}},
                                   "text_to_speech": {"colour": {"precision": 0.1}}},
               "retrieval": {"image_to_text": {"R@1_x_chance": 10.0}, "text_to_image": {"R@1_x_chance": 9.9}}}
    got = {(c["target"].split(",")[0], c["figure"]): c["passed"] for c in check_targets(results)}
    assert got == {("image probe shape", "image/shape"): True, ("image probe position", "image/position"): False,
                   ("own captions -> image", "text_to_image/colour"): True,
                   ("own captions -> image", "text_to_image/shape"): False,
                   ("held-out R@1", "image_to_text"): True, ("held-out R@1", "text_to_image"): False}


def test_a_target_on_every_field_that_no_ranking_can_meet_says_so():
    def results(ranker_shape):
        return {"caption_queries": {"text_to_image": {
            "colour": {"precision": 0.9, "chance": 0.1, "label_ranker": 0.52, "queries": 5},
            "shape": {"precision": 0.2, "chance": 0.1, "label_ranker": ranker_shape, "queries": 5}}},
            "probe": {}, "retrieval": {}}
    out_of_reach = results(0.6)  # 0.52 + 0.6 < 2 x 0.6
    lines = check_targets(out_of_reach)
    assert [(c["passed"], c["reachable"], round(c["bound"], 3)) for c in lines] == [(True, False, 1.12), (False, False, 1.12)]
    out_of_reach["targets"] = lines
    printed = report(out_of_reach, "a {colour} {shape}").splitlines()
    assert [line.split()[-1] for line in printed if "text_to_image/colour" in line] == ["PASS"]
    assert any(line.endswith("FAIL (out of reach: any ranking's P@10 of these fields sum to at most 1.120)")
               for line in printed if "text_to_image/shape" in line)
    assert all(c["reachable"] for c in check_targets(results(0.7)))  # 0.52 + 0.7 >= 1.2


def test_attributes_cli_prints_and_writes_the_figures_of_a_tiny_checkpoint(labelled, tmp_path, capsys):
    out, probe_out = tmp_path / "attributes.json", tmp_path / "probe.json"
    common = ["--checkpoint", labelled["export"], "--train", labelled["train"], "--heldout", labelled["heldout"],
              "--tokenizer", labelled["tok"], "--batch-size", "5", "--device", "cpu"]
    assert attributes_main([*common, "--json", str(out), "--caption-queries", "10"]) == 0
    stdout = capsys.readouterr().out
    res = json.loads(out.read_text())
    r = res["results"]
    n_values = len(LABELLED_COLOURS) * len(LABELLED_SHAPES)
    assert set(r["template_queries"]) == {"text_to_image"}  # no speech in these shards
    for field in ("colour", "shape"):
        tq = r["template_queries"]["text_to_image"][field]
        assert tq["queries"] == n_values and tq["k"] == 10 and 0 <= tq["precision"] <= 1
        assert r["caption_queries"]["text_to_image"][field]["queries"] == 10
    assert r["template_queries"]["text_to_image"]["colour"]["chance"] == pytest.approx(0.5)
    assert r["caption_queries"]["text_to_image"]["colour"]["chance"] == pytest.approx(5 / 11)  # own sample left out
    assert set(r["retrieval"]) == {"image_to_text", "text_to_image"}
    for d in r["retrieval"].values():
        assert d["R@1_x_chance"] == pytest.approx(d["R@1"] / d["chance_R@1"]) and d["num_candidates"] == 12
    assert set(r["probe"]) == {"image"}  # text is not probed
    figures = {(c["target"], c["figure"]) for c in r["targets"]}
    assert ("image probe shape, gain over random init", "image/shape") in figures
    assert ("held-out R@1, multiple of chance", "text_to_image") in figures
    assert not any("position" in f for _, f in figures)  # no position label: no position target
    meta = res["metadata"]
    assert meta["template_queries"] == n_values and meta["query_template"] == "a {colour} {shape}"
    assert meta["random_init_seed"] == 0 and meta["step"] == 7 and "git_commit" in meta
    assert "'a {colour} {shape}'  text_to_image" in stdout and ("PASS" in stdout or "FAIL" in stdout)
    # the probe figures are eval probe's own
    assert probe_main("probe", [*common, "--json", str(probe_out)]) == 0
    probe = json.loads(probe_out.read_text())["results"]["image"]
    for field, fig in r["probe"]["image"].items():
        both = probe[field]["logistic"]
        assert (fig["trained"], fig["random_init"]) == (both["trained"]["top1"], both["random_init"]["top1"])
        assert fig["gain"] == pytest.approx(fig["trained"] - fig["random_init"])


@pytest.mark.parametrize("args, says", [
    (["--query-template", "a {position}"], "--query-template 'a {position}': no held-out row is labelled position"),
    (["--caption-queries", "0"], "--caption-queries: must be > 0"),
])
def test_attributes_usage_errors_are_one_line_exit_2(labelled, capsys, args, says):
    argv = ["--checkpoint", labelled["export"], "--tokenizer", labelled["tok"], "--train", labelled["train"],
            "--heldout", labelled["heldout"], "--no-random-init", *args]
    try:
        rc = attributes_main(argv)
    except SystemExit as exc:  # argparse's own errors exit from parse_args
        rc = exc.code
    assert rc == 2
    assert says in error_line(capsys)


def test_module_dispatches_attributes(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unimodal_free.eval", "attributes", "--checkpoint", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--checkpoint" in proc.stderr, proc.stderr
