"""The Beam pipeline: read -> split -> tokenize -> pair -> mask -> write, wired.

Each stage is a ``PTransform`` in :mod:`preprocess.stages` over plain functions
(:mod:`documents`, :mod:`sentences`, :mod:`tokenization`, :mod:`pairs`,
:mod:`masking`, :mod:`shards`); this module only connects them. Skipped items are
counted twice: as Beam metrics for live monitoring, and as data folded into the
manifest, so the manifest's counts are exact on every runner.

Shuffles. Pairing emits, per document, its IsNext pairs, its random-next requests
(segment A waiting for a B) and as many donor segments (B candidates) as requests.
All three are keyed by a bucket taken from the top bits of a random 64-bit key and
meet in one ``GroupByKey``, which moves contiguous groups of buckets (buckets, groups and
shards are sized apart, :mod:`preprocess.sizing`): there a request draws a donor of another document from
its bucket, and since requests and donors land in buckets at random, the donor is a
random one from the whole split, not from a fixed partition. The same keys define
the output order: buckets are contiguous key ranges, so sorting each bucket by key
and offsetting by the row counts of earlier buckets (joined to each bucket) gives every row
its global position, and shard ``s`` of ``S`` takes positions
``[s*N/S, (s+1)*N/S)``: shards differ by at most one row. A second ``GroupByKey``
gathers each shard's pieces for writing.

The pipeline's shape is one every runner runs as written, Beam's Dask runner included:
single-output ``ParDo`` s (several outputs are tagged records split by
:class:`~preprocess.stages.counting.ByTag`), joins rather than side inputs, batching in
``process`` rather than ``finish_bundle``, and one final transform (the manifest's write)
that depends on every branch. :mod:`preprocess.runners` checks that shape before a Dask run.

The tokens themselves do not travel through either ``GroupByKey``: pairing writes
its blocks to files under ``--output/.parts/`` and shuffles references
(:class:`SpilledBlocks`), and masking writes each bucket's rows for a shard to a file
there (:class:`ParkedRows`), which the shard's writer reads in position order.
``.parts/`` is removed before the manifest is written. What a worker holds at once is a
batch of documents, a bucket, or a piece of a shard: sizes fixed by the options
(:mod:`preprocess.sizing`), never by the corpus.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from preprocess.config import PreprocessConfig
from preprocess.input_parts import InputPart
from preprocess.shards import FORMAT_NAME, FORMAT_VERSION, PARTS_DIR, RowSpec
from preprocess.sizing import bucket_count, group_count
from preprocess.stages.counting import STATS, SumStats
from preprocess.stages.mask import MaskInstances
from preprocess.stages.pair import CreatePairs
from preprocess.stages.read import ReadCorpus, SplitSentences
from preprocess.stages.tokenize import TokenizeDocuments
from preprocess.stages.write import WriteManifest, WriteShards
from preprocess.tokenization import TokenizerSpec, VocabInfo


def build_pipeline(
    p: beam.Pipeline,
    cfg: PreprocessConfig,
    inputs: list[str] | list[InputPart],
    vocab: VocabInfo,
    tokenizer_threads: int | None = None,
    text: int = 0,
) -> None:
    """Add the whole job to ``p``; the manifest is written after every shard.

    ``inputs``: the files, or the parts they are read in (:func:`~preprocess.input_parts.plan_parts`).
    ``text``: the bytes of text they hold (:func:`~preprocess.sizing.text_bytes`), which sizes the buckets.

    ``tokenizer_threads``: threads per worker process for tokenization (None: the
    library's default, all cores), for local runs with several worker processes.
    """
    spec = TokenizerSpec(cfg.vocab, cfg.lower_case)
    row_spec = RowSpec(
        max_seq_length=cfg.max_seq_length,
        cls_id=vocab.cls_id,
        sep_id=vocab.sep_id,
        unk_id=vocab.unk_id,
        token_dtype=vocab.token_dtype.name,
        masking=cfg.masking,
        mask_vocab=vocab.mask_vocab(),
    )
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "vocab_fingerprint": vocab.fingerprint,
        "vocab_size": str(vocab.size),
        "max_seq_length": str(cfg.max_seq_length),
        "masked_lm_prob": repr(cfg.masked_lm_prob),
        "max_predictions_per_seq": str(cfg.max_predictions_per_seq),
        "whole_word_mask": str(cfg.whole_word_mask).lower(),
        "seed": str(cfg.seed),
    }
    shares = cfg.split_shares

    parts = [x if isinstance(x, InputPart) else InputPart(i, x) for i, x in enumerate(inputs)]
    # the files in the inputs' order, however the parts are listed (the job lists them largest first)
    files = list(dict.fromkeys(part.path for part in sorted(parts, key=lambda part: part.file_index)))
    read = p | "ListFiles" >> beam.Create([tuple(part) for part in parts]) | "Read" >> ReadCorpus(cfg.read_params)
    sentences = read["documents"] | "Split" >> SplitSentences(cfg.language)
    tokenized = sentences | "Tokenize" >> TokenizeDocuments(
        spec, cfg.max_seq_length, vocab.token_dtype.name, tokenizer_threads, cfg.validation_fraction
    )
    all_stats = [read[STATS], tokenized[STATS]]
    all_shards = []
    for split, share in shares.items():
        buckets = bucket_count(text, share, cfg.dupe_factor)
        groups = group_count(buckets)
        pairs = tokenized[split] | f"Pair[{split}]" >> CreatePairs(
            split, cfg.pairing, cfg.dupe_factor, cfg.seed, buckets, groups, FileSystems.join(cfg.output, PARTS_DIR)
        )
        sizing = cfg.shard_sizing(split, vocab.token_dtype.itemsize)
        masked = pairs["items"] | f"Mask[{split}]" >> MaskInstances(
            cfg.output, split, row_spec, cfg.pairing.max_num_tokens, sizing, pairs["counts"], buckets, groups
        )
        all_shards.append(
            masked["rows"] | f"Write[{split}]" >> WriteShards(cfg.output, split, vocab.token_dtype.name, metadata)
        )
        all_stats += [pairs[STATS], masked[STATS]]

    stats = (
        all_stats
        | "FlattenStats" >> beam.Flatten()
        | "SumStats" >> beam.CombinePerKey(SumStats())
    )
    shard_list = all_shards | "FlattenShards" >> beam.Flatten()
    header = {
        "config": {k: v for k, v in cfg.to_dict().items() if k != "output"},
        "vocab": {"fingerprint": vocab.fingerprint, "size": vocab.size, "token_dtype": vocab.token_dtype.name,
                  "file": "tokenizer.json" if spec.is_json else "vocab.txt", "lower_case": cfg.lower_case},
        "inputs": files,
        "split_names": list(shares),
    }
    _ = {"shards": shard_list, "stats": stats} | "Manifest" >> WriteManifest(cfg.output, header)
