"""The public corpora ``python -m unimodal_free.data.corpora NAME SRC DST`` converts: name -> module.

Each module has ``add_arguments(parser)`` (its own options) and
``convert(src: Path, dst: Path, args) -> ConversionReport``. ``--help`` imports every
module (for its options), so a module leaves what pulls in torch (the shard writer and
reader) to the functions that run a conversion: the help stays well under a second.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CORPORA: dict[str, str] = {
    "spokencoco": "unimodal_free.data.corpora.spokencoco",
    "flickr8k-audio": "unimodal_free.data.corpora.flickr8k_audio",
    "places-audio": "unimodal_free.data.corpora.places_audio",
    "coco-captions": "unimodal_free.data.corpora.coco_captions",
    "flickr30k": "unimodal_free.data.corpora.flickr30k",
    "librispeech": "unimodal_free.data.corpora.librispeech",
    "wav2vec-manifest": "unimodal_free.data.corpora.wav2vec_manifest",
    "img2dataset": "unimodal_free.data.corpora.img2dataset",
}


def corpus_module(name: str) -> ModuleType:
    """The converter module registered under ``name`` (KeyError for an unknown name)."""
    return importlib.import_module(CORPORA[name])
