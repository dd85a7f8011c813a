"""What a checkpoint's retrieval and features know about the attributes its labelled data names, with targets.

    python -m unimodal_free.eval attributes --checkpoint RUN [--train SHARDS --heldout SHARDS] \\
        [--query-template 'a {colour} {shape}'] [--caption-queries 200] [--json OUT] [--max-samples N] ...

Four figures, on the held-out split (default: the demo's train and held-out shards in ``data.demo_dir``):

1. attribute precision at 10 of text -> image and text -> speech (eval/attributes.py), over the template
   queries (every combination of the held-out values of the fields the template names) and over the
   held-out samples' own captions (the first ``--caption-queries``, each against the gallery less its own
   sample), with chance and the label ranker (eval/attributes.py: a ranking that knows every label) beside it;
2. the linear probe of every image and speech label field beside the random-init floor (``eval probe``'s
   numbers: the same code path, the same protocol);
3. held-out R@1 of every direction as a multiple of chance (``python -m unimodal_free.eval``'s retrieval);
4. a PASS/FAIL line per target in ``TARGETS`` whose figure exists; a precision target over every field
   of a query set that no ranking can meet (the label ranker's precisions sum to less than it asks)
   says so.

``--json`` writes all of it with the targets and the metadata the other eval commands write.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional

from unimodal_free.eval.attributes import DEFAULT_TEMPLATE, K, attribute_precision, template_queries
from unimodal_free.eval.embed import EmbeddingSet, embed_captions
from unimodal_free.eval.probe_cli import Setup, check_positive, common_parser, probe_models, run_command
from unimodal_free.eval.report import write_json
from unimodal_free.eval.retrieval import cross_modal_retrieval
from unimodal_free.eval.table import aligned
from unimodal_free.store.rebuild import EvalError

QUERY_MODALITY = "text"
PROBED = ("image", "speech")  # text probes read the label words off the caption: 100% trained or not
CAPTION_QUERIES = 200


class Target(NamedTuple):
    """One line of the target check: ``figure(results)`` yields (what, value) pairs, each must reach ``at_least``."""

    name: str
    at_least: float
    section: str  # results key
    path: tuple[str, ...]  # keys under it; "*" takes every key at that level
    value: str  # the metric's key
    shown: str = "{:.3f}"  # how the table prints the value and the bound


TARGETS = (
    Target("image probe shape, gain over random init", 0.30, "probe", ("image", "shape"), "gain", "{:+.3f}"),
    Target("image probe position, gain over random init", 0.10, "probe", ("image", "position"), "gain", "{:+.3f}"),
    Target("template queries -> image, shape P@10", 0.6, "template_queries", ("text_to_image", "shape"), "precision"),
    Target("own captions -> image, P@10", 0.6, "caption_queries", ("text_to_image", "*"), "precision"),
    Target("held-out R@1, multiple of chance", 10.0, "retrieval", ("*",), "R@1_x_chance", "{:.1f}x"),
)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = common_parser("attributes", "Attribute precision of retrieval, probes over the random-init floor and "
                      "R@1 over chance, checked against targets.", clip_benchmark=False)
    p.add_argument("--train", nargs="+", default=None,
                   help="labelled shards the probes are fitted on (default: the demo's train split)")
    p.add_argument("--heldout", nargs="+", default=None,
                   help="labelled paired shards everything is scored on (default: the demo's held-out split)")
    p.add_argument("--query-template", default=None,
                   help=f"text queries: every combination of the held-out values of the label fields it names "
                        f"(default {DEFAULT_TEMPLATE!r}; skipped when the data lacks them)")
    p.add_argument("--caption-queries", type=int, default=CAPTION_QUERIES,
                   help=f"the first N held-out captions as queries (default {CAPTION_QUERIES})")
    args = p.parse_args(argv)
    check_positive(p, args, ("batch_size", "max_samples", "caption_queries"))
    return args


def demo_split(s: Setup, split: str, flag: str) -> list[str]:
    """The demo's ``split`` folder under ``data.demo_dir``; EvalError saying how to make it when absent."""
    folder = Path(s.cfg.data.demo_dir).expanduser() / split
    if not folder.is_dir():
        raise EvalError(f"{flag}: not given, and the demo's {split} split {folder} does not exist "
                        f"(python -m unimodal_free.data.demo {folder.parent} makes it)")
    return [str(folder)]


def precision_by_direction(queries, query_labels, heldout: EmbeddingSet, query_ids=None) -> dict[str, Any]:
    """{"text_to_{m}": {field: metrics}} against every labelled non-text gallery of ``heldout``."""
    out = {}
    for m in heldout.modalities:
        if m == QUERY_MODALITY or not any(heldout.labels[m]):
            continue
        fields = list(dict.fromkeys(f for lab in query_labels for f in lab))  # in the labels' own order
        out[f"{QUERY_MODALITY}_to_{m}"] = attribute_precision(
            queries, query_labels, heldout.embeddings[m], heldout.labels[m], fields, K,
            query_ids, None if query_ids is None else heldout.pair_ids[m])
    return out


def probe_gains(nested: dict[str, Any]) -> dict[str, Any]:
    """{modality: {field: {"trained", "random_init", "gain"}}}: the logistic probe's top-1 beside its floor."""
    out: dict[str, Any] = {}
    for m, fields in nested.items():
        for field, classifiers in fields.items():
            by_model = {name: r["top1"] for name, r in classifiers["logistic"].items() if "top1" in r}
            if "trained" in by_model:
                floor = by_model.get("random_init")
                out.setdefault(m, {})[field] = {"trained": by_model["trained"], "random_init": floor,
                                                "gain": None if floor is None else by_model["trained"] - floor}
    return out


def retrieval_multiples(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {d: {"R@1": r["R@1"], "chance_R@1": r["chance_R@1"], "R@1_x_chance": r["R@1"] / r["chance_R@1"],
                "num_queries": r["num_queries"], "num_candidates": r["num_candidates"], "too_small": r["too_small"]}
            for d, r in results.items()}


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per target figure present: {"target", "figure", "value", "at_least", "passed"}.

    A target whose last key is "*" over precisions asks every field at once; where the label ranker's
    precisions of those fields sum to less than ``at_least`` times their number, no ranking can meet
    it, and its lines carry ``"reachable": False`` and that ``"bound"`` (the sum).
    """
    lines = []
    for t in TARGETS:
        level = [((), results.get(t.section, {}))]
        for key in t.path:
            level = [(names + (k,), sub[k]) for names, sub in level for k in (sub if key == "*" else [key]) if k in sub]
        every_field = t.path[-1] == "*" and t.value == "precision"
        for names, metrics in level:
            value = metrics.get(t.value)
            if value is not None:
                lines.append({"target": t.name, "figure": "/".join(names), "value": value, "at_least": t.at_least,
                              "passed": value >= t.at_least, "shown": t.shown})
                if every_field and "label_ranker" in metrics:
                    lines[-1]["label_ranker"] = metrics["label_ranker"]
        if every_field:
            mark_unreachable([line for line in lines if line["target"] == t.name])
    return lines


def mark_unreachable(lines: list[dict[str, Any]]) -> None:
    """Per query set and direction (the figure less its field): reachable only if the label ranker's sum allows it."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        groups.setdefault(line["figure"].rsplit("/", 1)[0], []).append(line)
    for group in groups.values():
        if all("label_ranker" in line for line in group):
            bound = sum(line.pop("label_ranker") for line in group)
            reachable = bound >= group[0]["at_least"] * len(group) - 1e-9
            for line in group:
                line.update(reachable=reachable, bound=bound)


def report(results: dict[str, Any], template: str) -> str:
    parts = []
    fields = list(dict.fromkeys(f for sec in ("caption_queries", "template_queries")
                                for d in results.get(sec, {}).values() for f in d))
    rows = []
    for sec, label in (("template_queries", repr(template)), ("caption_queries", "own captions")):
        for d, by_field in results.get(sec, {}).items():
            n = max((m["queries"] for m in by_field.values()), default=0)
            rows.append([label, d, str(n)] + [f"{100 * by_field[f]['precision']:.1f} ({100 * by_field[f]['chance']:.1f}"
                                              f", {100 * by_field[f]['label_ranker']:.1f})" if f in by_field else "-"
                                              for f in fields])
    if rows:
        parts.append(f"attribute precision@{K} %, text queries (in parentheses: chance %, label ranker %)\n"
                     + aligned(["queries", "direction", "n", *fields], rows, left=2))
    probe = [[m, f, *(f"{100 * v:.1f}" if v is not None else "-" for v in (r["trained"], r["random_init"])),
              "-" if r["gain"] is None else f"{100 * r['gain']:+.1f}"]
             for m, fs in results["probe"].items() for f, r in fs.items()]
    parts.append("linear probe top-1 % (eval probe's protocol)\n"
                 + aligned(["modality", "field", "trained", "random init", "gain"], probe, left=2))
    ret = [[d, str(r["num_queries"]), f"{100 * r['R@1']:.1f}", f"{100 * r['chance_R@1']:.2f}",
            f"{r['R@1_x_chance']:.1f}x" + (" (too few queries)" if r["too_small"] else "")]
           for d, r in results["retrieval"].items()]
    parts.append("held-out retrieval\n" + aligned(["direction", "queries", "R@1 %", "chance %", "R@1 / chance"], ret, left=1))
    checks = [[c["target"], c["figure"], c["shown"].format(c["value"]), ">= " + c["shown"].format(c["at_least"]),
               "PASS" if c["passed"] else "FAIL" + ("" if c.get("reachable", True) else
                                                    f" (out of reach: any ranking's P@10 of these fields sum to "
                                                    f"at most {c['bound']:.3f})")]
              for c in results["targets"]]
    if checks:
        parts.append("targets\n" + aligned(["target", "figure", "value", "needs", ""], checks, left=2))
    return "\n\n".join(parts)


def run_attributes(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    s = Setup(args)
    train = args.train or demo_split(s, "train", "--train")
    heldout_paths = args.heldout or demo_split(s, "heldout", "--heldout")
    probes = probe_models(s, train, heldout_paths, modalities=list(PROBED))
    heldout = probes.heldout["trained"]
    results: dict[str, Any] = {}
    gallery_labels = [lab for m in heldout.modalities if m != QUERY_MODALITY for lab in heldout.labels[m]]
    template = args.query_template or DEFAULT_TEMPLATE
    try:
        texts, labels = template_queries(template, gallery_labels)
    except ValueError:
        if args.query_template:
            raise
        texts, labels = [], []  # the demo's default template on data without its fields: nothing to ask
    if texts:
        model = s.models["trained"]
        queries = embed_captions(model, texts, s.embed_fn, s.tokenizer, s.cfg.data, s.device)
        results["template_queries"] = precision_by_direction(queries, labels, heldout)
    if QUERY_MODALITY in heldout.modalities:
        n = min(args.caption_queries, heldout.rows(QUERY_MODALITY))
        results["caption_queries"] = precision_by_direction(
            heldout.embeddings[QUERY_MODALITY][:n], heldout.labels[QUERY_MODALITY][:n], heldout,
            heldout.pair_ids[QUERY_MODALITY][:n])
    results["probe"] = probe_gains(probes.nested)
    results["retrieval"] = retrieval_multiples(
        cross_modal_retrieval(heldout.embeddings, heldout.pair_ids, min_queries=s.cfg.eval.min_queries))
    results["targets"] = check_targets(results)
    data = {**probes.data, "query_template": template if texts else None, "template_queries": len(texts),
            "caption_queries": args.caption_queries, "k": K}
    meta = s.metadata(data, time.perf_counter() - start)
    print(f"checkpoint {s.source} (step {s.step}, {s.which}, features {args.features}); {meta['seconds']} s")
    print(report(results, template))
    if args.json:
        write_json({"results": results, "probe": probes.nested, "metadata": meta}, args.json)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_command(parse_args, run_attributes, argv)
