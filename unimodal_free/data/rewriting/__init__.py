"""Shards -> new shards: ``split`` (train / held-out by pair id) and ``pairing`` (a partially paired corpus).

    python -m unimodal_free.data.rewriting.split SRC DST_DIR [--heldout 0.1]
    python -m unimodal_free.data.rewriting.pairing SRC DST_DIR [--paired 0.3] [--drop image+speech]
"""
