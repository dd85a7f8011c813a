"""Data: from the files corpora ship as, to shards, to the batches a run trains on.

Sub-packages, each importing only those listed before it:

    reading/    one shard -> decoded rows: tar reader, stream opener, sample decoding into Elements, media
                decoding and label rules (the writer validates with the same), the tokenizer
    writing/    inputs -> shards: raw samples, the shard writer, corpus layouts
                (``python -m unimodal_free.data.writing.shards``)
    demo/       the generated demo corpus (``python -m unimodal_free.data.demo``)
    loading/    a run's data: its sources (the demo by default), bucketing, the DataLoader
    rewriting/  shards -> shards: a train/held-out split, partial pairing
                (``python -m unimodal_free.data.rewriting.split`` / ``.pairing``)
    corpora/    public corpora -> shards (``python -m unimodal_free.data.corpora``)
"""
