"""Inputs -> shards: how corpora ship (``layouts``), one validated sample (``raw_samples``), the shard writer.

``python -m unimodal_free.data.writing.shards LAYOUT INPUT OUTPUT_DIR`` (``shards.py``) writes
WebDataset shards from a corpus folder; everything that writes shards goes through ``shard_writer``.
"""
