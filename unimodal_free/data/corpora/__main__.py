"""Convert a public corpus, laid out as published, into train and held-out shards.

    python -m unimodal_free.data.corpora NAME SRC DST [options]

Writes ``DST/train/shard-*.tar``, ``DST/heldout/shard-*.tar`` and ``DST/report.json`` (samples per
modality combination per split, and every skipped entry with its reason), and prints the report.
``python -m unimodal_free.data.corpora NAME --help`` lists a corpus's own options.
"""

from __future__ import annotations

import sys
from argparse import RawDescriptionHelpFormatter
from pathlib import Path

from unimodal_free.data.corpora.common import CorpusError
from unimodal_free.data.corpora.conversion import add_common_arguments
from unimodal_free.data.corpora.registry import CORPORA, corpus_module
from unimodal_free.usage import ArgumentParser, usage_errors


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m unimodal_free.data.corpora", description=__doc__.split("\n")[0],
                        formatter_class=RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="corpus", required=True, metavar="NAME", parser_class=ArgumentParser)
    for name in CORPORA:
        module = corpus_module(name)
        p = sub.add_parser(name, help=module.__doc__.split("\n")[0], description=module.__doc__,
                           formatter_class=RawDescriptionHelpFormatter)
        p.add_argument("src", type=Path, help="the corpus folder as published")
        p.add_argument("dst", type=Path, help="output folder (train/, heldout/, report.json)")
        add_common_arguments(p)
        module.add_arguments(p)
    return ap


@usage_errors(CorpusError)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = corpus_module(args.corpus).convert(args.src, args.dst, args)
    print(report.table())
    return 0 if report.written() > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
