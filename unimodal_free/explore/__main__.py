"""Explore a gallery with a trained model in the browser: query by caption, picture or recording, page through
the neighbours per modality, click any result to make it the query.

    python -m unimodal_free.explore --model runs/joint/model --gallery ~/.cache/unimodal_free/demo/heldout \\
        [--port 8765] [--host 127.0.0.1]

``--model`` and ``--gallery`` are the search command's (``python -m unimodal_free.search``), with its gallery
cache: a gallery embedded once starts in seconds. Listens on 127.0.0.1 unless ``--host`` says otherwise (a
warning line then). Uploads are capped at 20 MiB and decoded like shard members. Ctrl-C stops it.
Exit status 2 with one ``error:`` line for a bad flag, a missing model or gallery, an empty gallery or a port
that is taken.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

from unimodal_free.explore.api import Explorer
from unimodal_free.explore.card import card_summary
from unimodal_free.explore.server import ExploreServer
from unimodal_free.search.options import add_model_gallery_args, embedded_gallery, load_model, require_positive
from unimodal_free.search.gallery import list_gallery
from unimodal_free.store.checkpoints import CheckpointError
from unimodal_free.store.rebuild import EvalError
from unimodal_free.usage import ArgumentParser, UsageError, usage_errors


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m unimodal_free.explore", description=__doc__.split("\n\n")[0])
    add_model_gallery_args(p)
    p.add_argument("--port", type=int, default=8765, help="default 8765; 0: any free port")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port: must be 0..65535, got {args.port}")
    require_positive(p, args, "batch_size")
    return args


def build(args: argparse.Namespace) -> tuple[Explorer, str]:
    """(The explorer over the embedded gallery, a start-up line with the time each part took)."""
    started = time.perf_counter()
    gallery = list_gallery(args.gallery)
    embedder = load_model(args)
    loaded = time.perf_counter()
    done, status = embedded_gallery(gallery, embedder, args)
    explorer = Explorer(embedder, gallery, done.cached, status, card_summary(embedder))
    ready = time.perf_counter()
    counts = ", ".join(f"{m} {n}" for m, n in explorer.info()["gallery"]["counts"].items())
    line = (f"model {embedder.source} (step {embedder.step}, {embedder.which}); gallery {args.gallery}: "
            f"{len(explorer.items)} items ({counts}); {status}\n"
            f"ready in {ready - started:.1f} s (model {loaded - started:.1f} s, gallery {ready - loaded:.1f} s)")
    return explorer, line


@usage_errors(EvalError, CheckpointError, FileNotFoundError, ValueError)
def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    explorer, line = build(args)
    try:
        server = ExploreServer(explorer, args.host, args.port)
    except OSError as exc:
        raise UsageError(f"--host {args.host} --port {args.port}: cannot listen ({exc.strerror or exc})") from None
    print(line)
    if not server.loopback:
        print(f"warning: listening on {args.host}, not this machine only: anyone who can reach port "
              f"{server.server_address[1]} can query the model and see the gallery", file=sys.stderr, flush=True)
    print(f"explorer: {server.url} (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
