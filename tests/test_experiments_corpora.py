"""An experiment's rewritten corpus is written once, reused by the same recipe, refused to another."""

import json
from pathlib import Path

import pytest

from unimodal_free.data.writing.shard_writer import ShardSink
from unimodal_free.experiments.__main__ import Context
from unimodal_free.experiments.corpora import paired_corpus
from unimodal_free.experiments.runner import ExperimentError


@pytest.fixture
def ctx(tmp_path):
    with ShardSink(tmp_path / "src", maxcount=5) as sink:
        for i in range(10):
            sink.write({"__key__": f"s{i}", "txt": f"line {i}".encode(), "png": b"-",
                        "json": b'{"modalities": ["image", "text"]}'})
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": {"train": [{"path": str(tmp_path / "src"), "weight": 2.0}],
                                           "heldout": [str(tmp_path / "src")]}, "train": {"seed": 7}}))
    lines = []
    return Context(root=tmp_path / "root", config=str(config), ranks=1, log=lines.append), lines


def test_written_once_then_reused_with_the_source_weight(ctx):
    ctx, lines = ctx
    first = paired_corpus(ctx, "half", paired=0.5)
    out = ctx.root / "corpora" / "half-seed7" / "0"
    assert first.override == f'data.train=[{{"path": "{out}", "weight": 2.0}}]'
    assert first.count("read") == 10 and first.stamps[0]["seed"] == 7
    assert len(list(out.glob("shard-*.tar"))) == 2
    mtime = (out / "shard-000000.tar").stat().st_mtime_ns
    again = paired_corpus(ctx, "half", paired=0.5)
    assert again == first and lines[-1] == f"half: reusing corpus {out}"
    assert (out / "shard-000000.tar").stat().st_mtime_ns == mtime


def test_another_recipe_in_the_same_folder_is_refused(ctx):
    ctx, _ = ctx
    paired_corpus(ctx, "half", paired=0.5)
    with pytest.raises(ExperimentError, match="half-seed7/0: a corpus made from"):
        paired_corpus(ctx, "half", paired=0.3)


def test_an_interrupted_rewrite_is_redone(ctx):
    ctx, _ = ctx
    out = ctx.root / "corpora" / "half-seed7" / "0"
    out.mkdir(parents=True)
    (out / "shard-000000.tar").write_bytes(b"torn")  # no pairing.json: the rewrite did not finish
    assert paired_corpus(ctx, "half", paired=0.5).count("read") == 10
