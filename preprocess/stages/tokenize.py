"""Stage 2, tokenize: batches of (doc_id, sentences) -> DocumentBatch per split.

:func:`tokenize_batch` encodes a batch of documents' sentences into one packed
:class:`~preprocess.packed.DocumentBatch`, and :func:`in_validation` assigns documents to
the validation split by a hash of their id.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from preprocess import rng
from preprocess.packed import DocumentBatch
from preprocess.stages.counting import STATS, ByTag, count
from preprocess.tokenization import SentenceEncoder, TokenizerSpec, build_tokenizer


def in_validation(doc_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic split by document hash, independent of seed and dupe factor."""
    if fraction <= 0:
        return np.zeros(len(doc_ids), dtype=bool)
    return rng.uniform(rng.mix(rng.PURPOSE_SPLIT, np.asarray(doc_ids, dtype=np.uint64))) < fraction


def tokenize_batch(encoder: SentenceEncoder, batch: list[tuple[int, list[str]]], max_sentence_tokens: int,
                   token_dtype: np.dtype) -> tuple[DocumentBatch, Counter]:
    """Documents' sentences -> one packed batch (long sentences cut, empty documents dropped) and counts."""
    per_doc = np.fromiter((len(sents) for _, sents in batch), dtype=np.int64, count=len(batch))
    ids, lengths = encoder.encode([s for _, sents in batch for s in sents])
    return DocumentBatch.from_sentences(
        np.array([doc_id for doc_id, _ in batch], dtype=np.uint64), per_doc, lengths, ids.astype(token_dtype),
        max_sentence_tokens,
    )


_ENCODERS: dict[tuple, SentenceEncoder] = {}


def thread_encoder(spec: TokenizerSpec) -> SentenceEncoder:
    """This thread's encoder for ``spec``, kept by the process from one DoFn to the next.

    Beam's Dask runner sets a DoFn up for each partition (an input part): a new encoder each
    time would start every part with empty memos and encode again the pieces the last part
    already had (the memos are bounded, see :class:`SentenceEncoder`). One per thread, as an
    encoder is not shared between threads; the vocabulary file's size and time are part of the
    key, so a worker that outlives a job never encodes with a vocabulary that has changed since.
    """
    meta = FileSystems.match([spec.path])[0].metadata_list[0]
    key = (spec, meta.size_in_bytes, meta.last_updated_in_seconds, threading.get_ident())
    encoder = _ENCODERS.get(key)
    if encoder is None:
        for old in [k for k in _ENCODERS if k[3] == key[3]]:  # one encoder a thread: the last job's goes
            del _ENCODERS[old]
        encoder = _ENCODERS[key] = SentenceEncoder(build_tokenizer(spec))
    return encoder


class _TokenizeFn(beam.DoFn):
    def __init__(self, spec: TokenizerSpec, max_sentence_tokens: int, token_dtype: str, threads: int | None = None,
                 validation_fraction: float = 0.0):
        self.spec = spec
        self.max_sentence_tokens = max_sentence_tokens
        self.token_dtype = np.dtype(token_dtype)  # uint16 for vocabularies up to 65,536: half the shuffle
        self.threads = threads
        self.validation_fraction = validation_fraction

    def setup(self):
        threads = self.threads or dask_worker_threads()
        if threads:
            # Several worker processes share the machine: give each its share of the cores
            # (set before the tokenizer's thread pool first starts in this process).
            os.environ["RAYON_NUM_THREADS"] = str(threads)
        self.encoder = thread_encoder(self.spec)

    def teardown(self):
        # Beam's Dask runner sets up and tears down a DoFn per partition, and the worker keeps each
        # task's DoFn until the task is forgotten: the DoFn lets go of the encoder here, not with it.
        self.encoder = None

    def process(self, batch: list[tuple[int, list[str]]]):
        docs, stats = tokenize_batch(self.encoder, batch, self.max_sentence_tokens, self.token_dtype)
        yield count(stats, "documents")
        validation = in_validation(docs.doc_id, self.validation_fraction)
        if validation.any():
            yield "validation", docs.take(np.flatnonzero(validation))
        if not validation.all():
            yield "train", docs.take(np.flatnonzero(~validation)) if validation.any() else docs


def dask_worker_threads() -> int | None:
    """The threads of the Dask worker running this task (its share of the node's cores), if any."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):  # not installed; not in a Dask worker
        return None


class TokenizeDocuments(beam.PTransform):
    """Batches of (doc_id, sentences) -> DocumentBatch per split.

    Outputs: ``train`` and, with a validation fraction, ``validation`` (documents assigned by
    :func:`in_validation`), and ``stats``.
    """

    def __init__(self, spec: TokenizerSpec, max_sentence_tokens: int, token_dtype: str = "int32",
                 threads: int | None = None, validation_fraction: float = 0.0):
        super().__init__()
        self.args = (spec, max_sentence_tokens, token_dtype, threads, validation_fraction)
        self.validation_fraction = validation_fraction

    def expand(self, batches: beam.PCollection):  # -> {tag: PCollection}, see ByTag.expand
        splits = ("train", "validation") if self.validation_fraction > 0 else ("train",)
        return batches | "Encode" >> beam.ParDo(_TokenizeFn(*self.args)) | ByTag(*splits, STATS)
