"""Apache Beam job turning raw text into tokenized, masked BERT sentence-pair Arrow shards."""
