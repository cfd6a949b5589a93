"""The Beam pipeline: read -> split -> tokenize -> pair -> mask -> write.

Each stage is a named ``PTransform``; the logic lives in plain functions elsewhere
(:mod:`documents`, :mod:`sentences`, :mod:`tokenization`, :mod:`pairs`,
:mod:`masking`, :mod:`shards`). Skipped items are counted twice: as Beam metrics
for live monitoring, and as data folded into the manifest, so the manifest's counts
are exact on every runner.

Shuffles. Pairing emits, per document, its IsNext pairs, its random-next requests
(segment A waiting for a B) and as many donor segments (B candidates) as requests.
All three are keyed by a bucket taken from the top bits of a random 64-bit key and
meet in one ``GroupByKey``: there a request draws a donor of another document from
its bucket, and since requests and donors land in buckets at random, the donor is a
random one from the whole split, not from a fixed partition. The same keys define
the output order: buckets are contiguous key ranges, so sorting each bucket by key
and offsetting by the row counts of earlier buckets (a side input) gives every row
its global position, and shard ``s`` of ``S`` takes positions
``[s*N/S, (s+1)*N/S)``: shards differ by at most one row. A second ``GroupByKey``
gathers each shard's rows for writing.

The tokens themselves do not travel through either ``GroupByKey``: pairing writes
its blocks to files under ``--output/.parts/`` and shuffles references
(:class:`SpilledBlocks`), and since bucket ``s`` holds nearly the rows of shard
``s``, masking parks those in a file (:class:`ParkedRows`) and shuffles only the
rows near its ends. ``.parts/`` is removed before the manifest is written.
"""

from __future__ import annotations

import os
import pickle
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsDict, AsList, TaggedOutput

from preprocess import rng
from preprocess.config import PreprocessConfig
from preprocess.documents import ReadParams, file_format, open_input, read_documents
from preprocess.manifest import MANIFEST_NAME, add_stats, build_manifest, dumps, split_summary
from preprocess.packed import DocumentBatch, DonorBlock, PairBlock, RequestBlock, offsets_of
from preprocess.pairs import (
    DocumentPlan,
    PairingParams,
    plan_blocks,
    plan_document,
    resolve_random_next,
    truncate_pairs,
)
from preprocess.sentences import split_sentences
from preprocess.shards import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PARTS_DIR,
    RowSpec,
    ShardInfo,
    build_rows,
    checksum,
    encode_shard,
    part_name,
    remove_parts,
    schema,
    shard_name,
    write_atomically,
)
from preprocess.tokenization import SentenceEncoder, TokenizerSpec, VocabInfo, build_tokenizer

STATS = "stats"
NAMESPACE = "preprocess"


def _count(stats: Counter | dict, group: str):
    """Beam metrics for the counts, and the same counts as a stats record."""
    _increment(stats)
    return TaggedOutput(STATS, (group, dict(stats)))


def _increment(counts: Counter | dict) -> None:
    for k, v in counts.items():
        if v:
            Metrics.counter(NAMESPACE, k).inc(v)


class SumStats(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, stats):
        return add_stats(acc, stats)

    def merge_accumulators(self, accs):
        out = {}
        for a in accs:
            out = add_stats(out, a)
        return out

    def extract_output(self, acc):
        return acc


# ---------------------------------------------------------------- read
class _ReadFileFn(beam.DoFn):
    def __init__(self, params: ReadParams):
        self.params = params

    def process(self, item):
        file_index, path = item
        stats: Counter = Counter()
        stats["files"] += 1
        try:
            with open_input(path) as f:
                yield from read_documents(f, file_index, file_format(path, self.params), self.params, stats)
        except (OSError, EOFError, ValueError, zlib.error) as e:
            # Corrupt compressed data raises one of these mid-stream: documents already
            # yielded are kept, the rest of the file is lost and counted.
            opened = stats["documents_read"] > 0 or stats["line_invalid_utf8"] > 0
            stats["file_corrupt" if opened or _is_compressed(path) else "file_unreadable"] += 1
            Metrics.counter(NAMESPACE, "errors").inc()
            _log_skip(path, e)
        yield _count(stats, "documents")


def _is_compressed(path: str) -> bool:
    return path.lower().endswith((".gz", ".bz2", ".zst", ".deflate"))


def _log_skip(path: str, e: Exception) -> None:
    import logging

    logging.getLogger(NAMESPACE).warning("input %s: %s: %s (counted, job continues)", path, type(e).__name__, e)


class ReadCorpus(beam.PTransform):
    """(file index, path) -> Document; stats to the ``stats`` output."""

    def __init__(self, params: ReadParams):
        super().__init__()
        self.params = params

    def expand(self, files):
        return files | beam.ParDo(_ReadFileFn(self.params)).with_outputs(STATS, main="documents")


# ---------------------------------------------------------------- split
class SplitSentences(beam.PTransform):
    """Document -> (doc_id, [sentence, ...])."""

    def __init__(self, language: str):
        super().__init__()
        self.language = language

    def expand(self, docs):
        language = self.language
        return docs | beam.Map(lambda d: (d.doc_id, split_sentences(d.lines, language)))


# ---------------------------------------------------------------- tokenize
class _TokenizeFn(beam.DoFn):
    def __init__(self, spec: TokenizerSpec, max_sentence_tokens: int, token_dtype: str, threads: int | None = None,
                 validation_fraction: float = 0.0):
        self.spec = spec
        self.max_sentence_tokens = max_sentence_tokens
        self.token_dtype = np.dtype(token_dtype)  # uint16 for vocabularies up to 65,536: half the shuffle
        self.threads = threads
        self.validation_fraction = validation_fraction

    def setup(self):
        if self.threads:
            # Several worker processes share the machine: give each its share of the cores
            # (set before the tokenizer's thread pool first starts in this process).
            os.environ["RAYON_NUM_THREADS"] = str(self.threads)
        self.encoder = SentenceEncoder(build_tokenizer(self.spec))

    def process(self, batch):
        per_doc = np.fromiter((len(sents) for _, sents in batch), dtype=np.int64, count=len(batch))
        ids, lengths = self.encoder.encode([s for _, sents in batch for s in sents])
        docs, stats = DocumentBatch.from_sentences(
            np.array([doc_id for doc_id, _ in batch], dtype=np.uint64), per_doc, lengths,
            ids.astype(self.token_dtype), self.max_sentence_tokens,
        )
        yield _count(stats, "documents")
        validation = in_validation(docs.doc_id, self.validation_fraction)
        if validation.any():
            yield TaggedOutput("validation", docs.take(np.flatnonzero(validation)))
        if not validation.all():
            yield docs.take(np.flatnonzero(~validation)) if validation.any() else docs


class TokenizeDocuments(beam.PTransform):
    """(doc_id, sentences) -> DocumentBatch per split, batched through the tokenizer.

    Outputs: ``train`` and ``validation`` (documents assigned by :func:`in_validation`),
    and ``stats``.
    """

    def __init__(self, spec: TokenizerSpec, max_sentence_tokens: int, token_dtype: str = "int32",
                 threads: int | None = None, validation_fraction: float = 0.0):
        super().__init__()
        self.args = (spec, max_sentence_tokens, token_dtype, threads, validation_fraction)

    def expand(self, docs):
        return (
            docs
            | "Batch" >> beam.BatchElements(min_batch_size=16, max_batch_size=256)
            | "Encode" >> beam.ParDo(_TokenizeFn(*self.args)).with_outputs(STATS, "validation", main="train")
        )


# ---------------------------------------------------------------- pair
def bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    """Buckets are contiguous ranges of the 64-bit key space, so key order is bucket order."""
    return ((keys >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)


@dataclass(frozen=True)
class SpilledBlocks:
    """One bucket's pairs, requests and donors from one batch of documents, in a file.

    The tokens between pairing and masking travel through files beside the output
    (as a distributed runner's shuffle does), and the GroupByKey moves only these
    references: Beam's local runner would otherwise pass every token through its
    controlling process, which costs more than the pairing itself.
    """

    path: str
    offset: int
    size: int

    def load(self) -> tuple[PairBlock, RequestBlock, DonorBlock]:
        with FileSystems.open(self.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.path}: {len(data)} bytes at {self.offset}, {self.size} written")
        return pickle.loads(data)


class _PairFn(beam.DoFn):
    def __init__(self, split: str, params: PairingParams, dupe_factor: int, seed: int, buckets: int,
                 spill_dir: str | None):
        self.split, self.params, self.dupe_factor, self.seed, self.buckets = split, params, dupe_factor, seed, buckets
        self.spill_dir = spill_dir

    def process(self, docs: DocumentBatch):
        stats: Counter = Counter(documents=len(docs))
        plans = []
        lengths = docs.lengths.tolist()
        bounds = offsets_of(docs.sentences).tolist()
        for k, doc_id in enumerate(docs.doc_id.tolist()):
            plan = DocumentPlan()
            for pass_index in range(self.dupe_factor):
                plan_document(doc_id, lengths[bounds[k] : bounds[k + 1]], pass_index, self.seed, self.params, plan)
            stats["pairs_unpairable"] += plan.unpairable
            plans.append(plan)
        pairs, requests, donors = plan_blocks(docs, plans, self.seed, self.params.max_num_tokens)
        by_bucket = [
            _split_by_bucket(block, self.buckets) for block in (pairs, requests, donors)
        ]
        items = []
        for bucket in sorted(set().union(*by_bucket)):
            p = by_bucket[0].get(bucket, PairBlock.empty())
            q = by_bucket[1].get(bucket, RequestBlock.empty())
            d = by_bucket[2].get(bucket, DonorBlock.empty())
            if len(p) or len(q):
                yield TaggedOutput("counts", (bucket, len(p) + len(q)))
            items.append((bucket, (p, q, d)))
        yield from self._spill(items) if self.spill_dir else items
        yield _count(stats, self.split)

    def _spill(self, items: list) -> list[tuple[int, SpilledBlocks]]:
        # A name of its own per attempt: a retried bundle never overwrites what another read.
        path = FileSystems.join(self.spill_dir, f"{self.split}-{uuid.uuid4().hex}.blocks")
        refs, offset = [], 0
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for bucket, blocks in items:
                data = pickle.dumps(blocks, protocol=pickle.HIGHEST_PROTOCOL)
                f.write(data)
                refs.append((bucket, SpilledBlocks(path, offset, len(data))))
                offset += len(data)
        return refs


def _split_by_bucket(block, buckets: int) -> dict:
    """The rows of a block grouped by the bucket of their key."""
    if len(block) == 0:
        return {}
    of = bucket_of(block.key, buckets)
    order = np.argsort(of, kind="stable")
    values, starts = np.unique(of[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    return {int(v): block.take(order[a:b]) for v, a, b in zip(values, starts, ends)}


class CreatePairs(beam.PTransform):
    """DocumentBatch -> (bucket, (pairs, requests, donors)); row counts per bucket.

    With ``spill_dir`` the blocks are written there and (bucket, SpilledBlocks) emitted.
    """

    def __init__(self, split: str, params: PairingParams, dupe_factor: int, seed: int, buckets: int,
                 spill_dir: str | None = None):
        super().__init__()
        self.args = (split, params, dupe_factor, seed, buckets, spill_dir)

    def expand(self, docs):
        return docs | "Plan" >> beam.ParDo(_PairFn(*self.args)).with_outputs(STATS, "counts", main="items")


# ---------------------------------------------------------------- mask
ROWS_PER_BUILD = 16384  # bounds the masking scratch memory per call


class _ResolveAndMaskFn(beam.DoFn):
    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, num_shards: int):
        self.output, self.split, self.spec = output, split, spec
        self.max_num_tokens, self.num_shards = max_num_tokens, num_shards

    def process(self, element, counts: dict):
        bucket, groups = element
        groups = [g.load() if isinstance(g, SpilledBlocks) else g for g in groups]
        resolved, unresolved = resolve_random_next(
            RequestBlock.concat([g[1] for g in groups]), DonorBlock.concat([g[2] for g in groups])
        )
        pairs = PairBlock.concat([g[0] for g in groups] + [resolved])
        pairs, truncated = truncate_pairs(pairs, self.max_num_tokens)
        stats = {"random_next_unresolved": unresolved, "tokens_truncated": truncated}
        _increment(stats)
        if len(pairs):
            order = np.argsort(pairs.key, kind="stable")
            total = sum(counts.values())
            shards = min(self.num_shards, total)
            first = sum(c for b, c in counts.items() if b < bucket)
            home: list[tuple[int, pa.RecordBatch]] = []
            for lo in range(0, len(pairs), ROWS_PER_BUILD):
                chunk = pairs.take(order[lo : lo + ROWS_PER_BUILD])
                batch, row_stats = build_rows(chunk, self.spec)
                stats = add_stats(stats, row_stats)
                positions = first + lo + np.arange(len(chunk))
                shard_of = positions * shards // total
                for s in np.unique(shard_of).tolist():
                    idx = np.flatnonzero(shard_of == s)
                    piece = (int(positions[idx[0]]), batch if len(idx) == len(batch) else batch.take(idx))
                    if s == bucket:
                        home.append(piece)
                    else:  # take() copies: a slice would drag (and pickle) the whole batch's buffers
                        yield (int(s), shards), piece
            if home:
                yield (bucket, shards), (home[0][0], self._park(bucket, shards, [b for _, b in home]))
        yield TaggedOutput(STATS, (self.split, stats))

    def _park(self, shard: int, shards: int, batches: list[pa.RecordBatch]) -> ParkedRows:
        path = FileSystems.join(self.output, part_name(self.split, shard, shards))
        write_atomically(path, encode_shard(batches, batches[0].schema))
        return ParkedRows(path, sum(b.num_rows for b in batches))


@dataclass(frozen=True)
class ParkedRows:
    """Rows a bucket keeps for the shard of the same number, left in a file for its writer.

    Shard s holds the rows at global positions [s*N/S, (s+1)*N/S), and bucket s holds
    nearly the same rows: only those near the ends belong to a neighbouring shard. So
    a bucket ships just those through the shuffle and parks the rest, which the writer
    of shard s reads back, instead of moving the whole dataset a second time.
    """

    path: str
    rows: int

    def load(self) -> list[pa.RecordBatch]:
        with FileSystems.open(self.path) as f:
            table = pa.ipc.open_file(pa.py_buffer(f.read())).read_all()
        if table.num_rows != self.rows:
            raise OSError(f"{self.path}: {table.num_rows} rows, {self.rows} written")
        return table.to_batches()


class MaskInstances(beam.PTransform):
    """Resolve random-next B segments, truncate, mask; -> ((shard, shards), (position, rows or ParkedRows))."""

    def __init__(self, output: str, split: str, spec: RowSpec, max_num_tokens: int, num_shards: int, counts):
        super().__init__()
        self.args = (output, split, spec, max_num_tokens, num_shards)
        self.counts = counts

    def expand(self, items):
        return (
            items
            | "GroupByBucket" >> beam.GroupByKey()
            | "ResolveMask" >> beam.ParDo(_ResolveAndMaskFn(*self.args), counts=AsDict(self.counts)).with_outputs(
                STATS, main="rows"
            )
        )


# ---------------------------------------------------------------- write
class _WriteShardFn(beam.DoFn):
    def __init__(self, output: str, split: str, token_dtype: str, metadata: dict):
        self.output, self.split, self.token_dtype, self.metadata = output, split, token_dtype, metadata

    def process(self, element):
        (shard, shards), pieces = element
        pieces = sorted(pieces, key=lambda x: x[0])
        meta = {**self.metadata, "split": self.split, "shard": str(shard), "shards": str(shards)}
        sch = schema(np.dtype(self.token_dtype), meta)
        batches = [b.replace_schema_metadata(sch.metadata) for _, rows in pieces
                   for b in ([rows] if isinstance(rows, pa.RecordBatch) else rows.load())]
        data = encode_shard(batches, sch)
        rel = shard_name(self.split, shard, shards)
        write_atomically(FileSystems.join(self.output, rel), data)
        rows = sum(b.num_rows for b in batches)
        tokens = sum(len(b.column(0).flatten()) for b in batches)
        Metrics.counter(NAMESPACE, "shards_written").inc()
        yield ShardInfo(rel, rows, tokens, len(data), checksum(data))


class WriteShards(beam.PTransform):
    def __init__(self, output: str, split: str, token_dtype: str, metadata: dict):
        super().__init__()
        self.args = (output, split, token_dtype, metadata)

    def expand(self, rows):
        return rows | "GroupByShard" >> beam.GroupByKey() | "Write" >> beam.ParDo(_WriteShardFn(*self.args))


# ---------------------------------------------------------------- manifest
class _WriteManifestFn(beam.DoFn):
    def __init__(self, output: str, header: dict):
        self.output, self.header = output, header

    def process(self, _, shards: list, stats: dict):
        splits = {}
        for split in self.header["split_names"]:
            mine = [s for s in shards if s.path.startswith(split + "/")]
            splits[split] = split_summary(mine, stats.get(split, {}))
        manifest = build_manifest(
            self.header["config"], self.header["vocab"], self.header["inputs"], stats.get("documents", {}), splits
        )
        remove_parts(self.output)
        write_atomically(FileSystems.join(self.output, MANIFEST_NAME), dumps(manifest))
        yield manifest


def in_validation(doc_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic split by document hash, independent of seed and dupe factor."""
    if fraction <= 0:
        return np.zeros(len(doc_ids), dtype=bool)
    return rng.uniform(rng.mix(rng.PURPOSE_SPLIT, np.asarray(doc_ids, dtype=np.uint64))) < fraction


def build_pipeline(
    p: beam.Pipeline, cfg: PreprocessConfig, files: list[str], vocab: VocabInfo, tokenizer_threads: int | None = None
) -> None:
    """Add the whole job to ``p``; the manifest is written after every shard.

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
    shard_counts = {"train": cfg.num_shards}
    if cfg.validation_fraction > 0:
        shard_counts["validation"] = cfg.validation_shards

    docs, read_stats = p | "ListFiles" >> beam.Create(list(enumerate(files))) | "Read" >> ReadCorpus(cfg.read_params)
    sentences = docs | "Split" >> SplitSentences(cfg.language)
    tokenized = sentences | "Tokenize" >> TokenizeDocuments(
        spec, cfg.max_seq_length, vocab.token_dtype.name, tokenizer_threads, cfg.validation_fraction
    )
    token_stats = tokenized[STATS]
    all_stats = [read_stats, token_stats]
    all_shards = []
    for split, shards in shard_counts.items():
        items, pair_stats, counts = tokenized[split] | f"Pair[{split}]" >> CreatePairs(
            split, cfg.pairing, cfg.dupe_factor, cfg.seed, shards, FileSystems.join(cfg.output, PARTS_DIR)
        )
        bucket_counts = counts | f"CountRows[{split}]" >> beam.CombinePerKey(sum)
        rows, mask_stats = items | f"Mask[{split}]" >> MaskInstances(
            cfg.output, split, row_spec, cfg.pairing.max_num_tokens, shards, bucket_counts
        )
        all_shards.append(rows | f"Write[{split}]" >> WriteShards(cfg.output, split, vocab.token_dtype.name, metadata))
        all_stats += [pair_stats, mask_stats]

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
        "split_names": list(shard_counts),
    }
    _ = (
        p
        | "ManifestTrigger" >> beam.Create([None])
        | "WriteManifest" >> beam.ParDo(
            _WriteManifestFn(cfg.output, header),
            shards=AsList(shard_list),
            stats=AsDict(stats),
        )
    )
