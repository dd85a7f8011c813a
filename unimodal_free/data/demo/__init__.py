"""The demo corpus: one coloured shape per picture, its caption written and spoken (``build.py``).

``scenes`` draws the plan of every sample, ``image`` paints a scene, ``speech`` speaks its caption
(espeak-ng), ``build`` writes the shards and the tokenizer. ``python -m unimodal_free.data.demo``.
"""
