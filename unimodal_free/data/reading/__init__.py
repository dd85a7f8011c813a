"""One shard -> decoded rows: the reading half of the shard format, shared by training, eval and the tools.

``tar_reader`` reads members with every size checked, ``streams`` opens a shard URL, ``samples``
turns shards into decoded units (bad ones skipped and counted by ``handlers``), ``elements``
decodes one sample's modalities into Elements (``media`` decodes and validates the bytes, ``labels``
reads the labels, ``image_augment`` augments training pictures), ``tokenizer`` turns text into ids.
"""
