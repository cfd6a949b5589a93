"""DeepSpeed ZeRO BERT pre-training on the shards written by :mod:`preprocess`."""
