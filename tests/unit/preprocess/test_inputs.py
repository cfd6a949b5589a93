import gzip
from collections import Counter

from preprocess.documents import Document, ReadParams, document_id
from preprocess.inputs import file_format, read_file


def test_format_detection_ignores_compression_suffix():
    p = ReadParams()
    assert file_format("a/b.jsonl.gz", p) == "jsonl"
    assert file_format("a/b.txt.bz2", p) == "text"
    assert file_format("a/b.JSON", p) == "jsonl"
    assert file_format("a/b.jsonl", ReadParams(input_format="text")) == "text"
    assert file_format("wiki/train-00001-of-00041.parquet", p) == "parquet"
    assert file_format("a/b.PQ", p) == "parquet"
    assert file_format("enwiki-20261201-pages-articles-multistream.xml.bz2", p) == "mediawiki"
    assert file_format("a/b.parquet", ReadParams(input_format="jsonl")) == "jsonl"


def test_read_file_keeps_documents_before_a_fault_and_counts_it(tmp_path):
    path = tmp_path / "cut.txt.gz"
    data = gzip.compress(b"".join(f"Document number {i}.\n\n".encode() for i in range(20000)))
    path.write_bytes(data[: len(data) // 2])
    stats = Counter()
    docs = list(read_file(3, str(path), ReadParams(), stats))
    assert 0 < len(docs) < 20000 and docs[0] == Document(document_id(3, 0), ["Document number 0."])
    assert stats["files"] == 1 and stats["file_corrupt"] == 1 and stats["errors"] == 1
    stats = Counter()
    assert list(read_file(0, str(tmp_path / "missing.txt"), ReadParams(), stats)) == []
    assert stats["file_unreadable"] == 1
