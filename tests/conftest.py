"""Shared test data, made from text every Python installation carries.

The corpus is :mod:`preprocess.example`'s: the standard library's own docstrings
(real English technical prose, ~600 documents) plus a few documents in other
scripts. The vocabulary is trained on it with our own trainer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from preprocess.example import stdlib_documents, write_corpus

# One thread of torch's (OpenMP's) pool per process: pytest-xdist already runs one test per core, and
# each test's processes (ranks, launchers, Slurm jobs, the demo) inherit this. Threads on top
# oversubscribe the cores and spin against each other (the demo test took 110 s instead of 78 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """The directory ``name``, filled by ``build(directory)`` once in this pytest session, whichever
    pytest-xdist worker asks first; the others wait for it and share it (read it; copy to change it).
    A fixture's ``scope="session"`` is per worker process: without this, each worker that runs a test
    needing a trained run or a dataset would make its own."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # shared by this session's workers
    directory, done = root / "shared" / name, root / "shared" / f"{name}.done"
    directory.parent.mkdir(exist_ok=True)
    with FileLock(str(root / "shared" / f"{name}.lock")):
        if not done.exists():
            if directory.exists():  # a build that failed in another worker: start again
                shutil.rmtree(directory)
            directory.mkdir()
            build(directory)
            done.touch()
    return directory


@pytest.fixture(scope="session")
def corpus_docs() -> list[list[str]]:
    return stdlib_documents()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, corpus_docs) -> Path:
    return built_once(tmp_path_factory, "corpus", lambda d: write_corpus(d, corpus_docs))


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory, corpus_dir) -> str:
    from preprocess.vocab import train_vocab, write_vocab_txt

    def build(d: Path) -> None:
        tok, _ = train_vocab(sorted(str(p) for p in corpus_dir.glob("*.txt")), vocab_size=3000)
        write_vocab_txt(tok, str(d / "vocab.txt"))

    return str(built_once(tmp_path_factory, "vocab", build) / "vocab.txt")


@pytest.fixture(scope="session")
def parquet_corpus(tmp_path_factory, corpus_docs) -> Path:
    """The corpus as three Parquet files of several row groups (a document per row, its lines joined),
    with an id column beside the text and one null text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("parquet")
    for i in range(3):
        texts = ["\n".join(doc) for doc in corpus_docs[i::3]] + [None]
        table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": pa.array(texts, pa.string())})
        pq.write_table(table, d / f"train-{i:05d}-of-00003.parquet", row_group_size=64)
    return d


@pytest.fixture(scope="session")
def wiki_corpus(tmp_path_factory, corpus_docs) -> Path:
    """The corpus as two MediaWiki dumps (bz2 multistream, as Wikipedia's, and plain XML): articles in
    markup, talk pages and redirects."""
    from tests.wiki_dump import plain_documents, wiki_pages, write_dump

    d = tmp_path_factory.mktemp("wiki")
    pages = wiki_pages(plain_documents(corpus_docs))
    half = len(pages) // 2
    write_dump(d / "wiki-pages-articles-multistream1.xml.bz2", pages[:half], streams_of=20)
    write_dump(d / "wiki-pages-articles-multistream2.xml", pages[half:])
    return d


def run_job(inputs: list[str], output: Path, vocab: str, *extra: str, workers: int = 1) -> dict:
    """Run the real job through its command-line parser."""
    from preprocess.config import parse_args
    from preprocess.job import run

    argv = [a for i in inputs for a in ("--input", i)] + ["--output", str(output), "--vocab", vocab]
    argv += list(extra) + [f"--direct_num_workers={workers}"]
    cfg, beam_args = parse_args(argv)
    return run(cfg, beam_args)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, corpus_dir, vocab_file) -> Path:
    """The real corpus preprocessed once (seq 64, two passes, validation split), shared by tests; in one
    in-process worker, which writes the bytes of any worker count (tested) without starting processes."""
    return built_once(tmp_path_factory, "dataset", lambda out: run_job(
        [str(corpus_dir / "*.txt")], out, vocab_file,
        "--max-seq-length", "64", "--dupe-factor", "2", "--num-shards", "4",
        "--validation-fraction", "0.05", workers=1,
    ))


def collated(lengths_by_row: list[list[int]], layout) -> dict:
    """The real collator's model inputs for a micro-batch whose row ``i`` holds sequences of the
    lengths ``lengths_by_row[i]`` (tokens 7, one masked position each), laid out by ``layout``."""
    import numpy as np

    from pretrain.data import Collator, MicroBatch

    rows, slots = [], []
    for slot, lengths in enumerate(lengths_by_row):
        for n in lengths:
            rows.append({"input_ids": np.full(n, 7), "token_type_ids": np.zeros(n, np.int8),
                         "masked_lm_positions": np.array([1]), "masked_lm_labels": np.array([9]),
                         "next_sentence_label": 0})
            slots.append(slot)
    plan = MicroBatch(tuple((i, 0) for i in range(len(rows))), tuple(slots), 0, 0, 0, 1, len(rows), len(rows))
    return Collator(layout)((plan, rows))["inputs"]


os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
