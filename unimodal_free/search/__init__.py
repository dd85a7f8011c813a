"""Rank a gallery (tar shards or a folder of files) against one query: ``python -m unimodal_free.search``.

``gallery.py`` lists and decodes the gallery with the shard reader and the embedder's own file routes,
``cache.py`` keeps its embeddings beside it (safetensors + JSON), ``ranking.py`` orders and prints the
hits, ``html.py`` writes the contact sheet.
"""
