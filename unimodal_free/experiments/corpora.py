"""Training corpora of the experiments: the configured train sources rewritten by ``data.pairing``.

Each corpus is written once under ``<root>/corpora/<name>-seed<seed>/<source index>`` and reused
while its ``pairing.json`` (written last, so only a complete corpus has one) records the same
source, drop list, paired share and seed; any other recipe there is refused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from typing import Sequence

from unimodal_free.config import load_config
from unimodal_free.data.rewriting.pairing import STAMP, rewrite
from unimodal_free.data.loading.sources import resolve_sources
from unimodal_free.experiments.runner import ExperimentError


@dataclass(frozen=True)
class Corpus:
    override: str  # ``data.train=[...]`` for the arm that trains on it
    stamps: tuple[dict, ...]  # pairing.json of each rewritten source (what was written)

    def count(self, field: str) -> int:
        return sum(int(s[field]) for s in self.stamps)


def paired_corpus(ctx, name: str, drop: Sequence[str] = (), paired: float = 1.0) -> Corpus:
    """The configured train sources (demo when none) with ``--drop``/``--paired`` applied, seeded by train.seed."""
    cfg = load_config(ctx.config, list(ctx.common))
    train = resolve_sources(cfg.data).train
    seed = cfg.train.seed
    wanted = {"drop": sorted(drop), "paired": paired, "seed": seed}
    sources, stamps = [], []
    for i, src in enumerate(train):
        out = ctx.root / "corpora" / f"{name}-seed{seed}" / str(i)
        stamp = out / STAMP
        if stamp.is_file():
            made = json.loads(stamp.read_text())
            if {k: made[k] for k in wanted} != wanted or made["source"] != src.path:
                raise ExperimentError(f"{out}: a corpus made from {made['source']} with {made}; remove it")
            ctx.log(f"{name}: reusing corpus {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)  # no stamp: an interrupted rewrite of ours
            report = rewrite(src.path, out, drop, paired, seed, data_cfg=cfg.data)
            ctx.log(f"{name}: {report.summary(out)}")
            made = json.loads(stamp.read_text())
        sources.append({"path": str(out), "weight": src.weight})
        stamps.append(made)
    return Corpus(f"data.train={json.dumps(sources)}", tuple(stamps))
