import gzip
import io
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from preprocess.documents import (
    Document,
    ReadParams,
    document_id,
    document_source,
    file_format,
    iter_lines,
    read_documents,
    read_file,
)


def read(data: bytes, fmt="text", **kw):
    stats = Counter()
    docs = list(read_documents(io.BytesIO(data), 3, fmt, ReadParams(**kw), stats))
    return docs, stats


def test_blank_lines_separate_documents_and_ids_locate_them():
    data = b"First doc line one.\nLine two.\n\n\n  \nSecond doc.\n"
    docs, stats = read(data)
    assert [d.lines for d in docs] == [["First doc line one.", "Line two."], ["Second doc."]]
    file_index, offset = document_source(docs[1].doc_id)
    assert file_index == 3
    assert data[offset:].startswith(b"Second doc.")
    assert stats["documents_read"] == 2


def test_invalid_utf8_is_replaced_counted_and_the_line_kept():
    docs, stats = read(b"caf\xe9 au lait.\nGood line.\n")
    assert docs[0].lines == ["caf\ufffd au lait.", "Good line."]
    assert stats["line_invalid_utf8"] == 1


def test_binary_and_empty_files_are_skipped_and_counted():
    docs, stats = read(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 10)
    assert docs == [] and stats["file_binary"] == 1
    docs, stats = read(b"")
    assert docs == [] and stats["file_empty"] == 1


def test_long_line_is_cut_at_whitespace_with_bounded_pieces():
    words = " ".join(f"word{i}" for i in range(50_000)).encode()
    stats = Counter()
    lines = list(iter_lines(io.BytesIO(words + b"\nnext\n"), 10_000, stats, chunk_size=4096))
    assert all(len(raw) <= 10_000 for _, raw, _ in lines)
    assert b"".join(raw for _, raw, _ in lines[:-1]) == words
    assert lines[-1][1] == b"next"
    assert stats["line_too_long_split"] == len(lines) - 2
    # every piece but the last of the long line is cut between words
    assert all(raw.endswith(b" ") for _, raw, cut in lines if cut)


def test_cut_never_splits_a_utf8_character():
    text = ("é" * 30_000).encode()  # no whitespace at all
    lines = list(iter_lines(io.BytesIO(text), 1001, Counter(), chunk_size=777))
    assert "".join(raw.decode("utf-8") for _, raw, _ in lines) == "é" * 30_000


def test_large_document_is_split_at_a_line_boundary():
    data = b"\n".join(b"sentence number %d." % i for i in range(100)) + b"\n"
    docs, stats = read(data, max_document_bytes=500)
    assert len(docs) > 1 and stats["document_too_large_split"] == len(docs) - 1
    assert sum(len(d.lines) for d in docs) == 100
    assert len({d.doc_id for d in docs}) == len(docs)


def test_jsonl_reads_the_text_field_and_counts_bad_lines():
    lines = [
        json.dumps({"text": "One. Two.\n\nThree."}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"body": "no text field"}),
        json.dumps({"text": 5}),
        json.dumps({"text": "Last one."}),
    ]
    docs, stats = read(("\n".join(lines) + "\n").encode(), fmt="jsonl")
    assert [d.lines for d in docs] == [["One. Two.", "Three."], ["Last one."]]
    assert stats["json_invalid"] == 2 and stats["json_missing_field"] == 2


def test_jsonl_custom_field_and_overlong_line_is_skipped():
    big = json.dumps({"content": "x " * 5000})
    data = (json.dumps({"content": "Kept."}) + "\n" + big + "\n" + json.dumps({"content": "Also kept."}) + "\n")
    docs, stats = read(data.encode(), fmt="jsonl", text_field="content", max_json_line_bytes=1000)
    assert [d.lines for d in docs] == [["Kept."], ["Also kept."]]
    assert stats["json_line_too_long"] == 1


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


def test_utf8_bom_is_dropped():
    docs, _ = read(b"\xef\xbb\xbfHello there.\n")
    assert docs[0].lines == ["Hello there."]


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


def write_parquet(path, texts, row_group_size=3, **columns):
    table = pa.table({"text": pa.array(texts, pa.string()), **columns})
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def test_parquet_rows_are_documents_with_ids_of_their_rows(tmp_path):
    texts = ["First doc.\nIts second line.", "", None, "  Fourth doc.  \n\n", "Fifth.", "Sixth.", "Seventh."]
    path = write_parquet(tmp_path / "part-0.parquet", texts, id=pa.array(range(7)))
    stats = Counter()
    docs = list(read_file(4, path, ReadParams(), stats))
    assert docs == [
        Document(document_id(4, 0), ["First doc.", "Its second line."]),
        Document(document_id(4, 3), ["Fourth doc."]),
        Document(document_id(4, 4), ["Fifth."]),
        Document(document_id(4, 5), ["Sixth."]),
        Document(document_id(4, 6), ["Seventh."]),
    ]
    assert document_source(docs[1].doc_id) == (4, 3)  # file 4, row 3
    assert stats["parquet_null_text"] == 1 and stats["documents_read"] == 5
    assert pq.ParquetFile(path).num_row_groups == 3  # read across row groups


def test_parquet_text_from_another_column_and_large_strings(tmp_path):
    table = pa.table({"id": [1, 2], "content": pa.array(["Doc A.", "Doc B."], pa.large_string())})
    pq.write_table(table, tmp_path / "c.parquet")
    docs = list(read_file(0, str(tmp_path / "c.parquet"), ReadParams(text_field="content"), Counter()))
    assert [d.lines for d in docs] == [["Doc A."], ["Doc B."]]


def test_bad_parquet_files_are_counted_and_named(tmp_path, caplog):
    write_parquet(tmp_path / "no_text.parquet", ["x"], row_group_size=1)
    (tmp_path / "no_text.parquet").unlink()
    pq.write_table(pa.table({"body": ["A document."]}), tmp_path / "no_text.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "numbers.parquet")
    (tmp_path / "fake.parquet").write_text("just some text, not Parquet\n")
    (tmp_path / "empty.parquet").write_bytes(b"")
    good = write_parquet(tmp_path / "good.parquet", [f"Document {i} of the good file." for i in range(3000)],
                         row_group_size=100)
    data = open(good, "rb").read()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])  # the footer is gone
    stats = Counter()
    for name in ("no_text", "numbers", "fake", "empty", "truncated"):
        assert list(read_file(0, str(tmp_path / f"{name}.parquet"), ReadParams(), stats)) == []
    assert {k: v for k, v in stats.items() if v and k != "files"} == {
        "parquet_missing_column": 1, "parquet_column_not_text": 1, "file_not_parquet": 2, "file_empty": 1}
    assert "no_text.parquet: no column 'text' (it has 'body')" in caplog.text
    assert "numbers.parquet: column 'text' holds int64, not text" in caplog.text


def test_a_damaged_row_group_keeps_the_rows_before_it(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [f"Document number {i}." for i in range(4000)], row_group_size=1000)
    meta = pq.ParquetFile(path).metadata
    start = meta.row_group(2).column(0).data_page_offset  # the third row group's data: overwritten
    data = bytearray(open(path, "rb").read())
    data[start : start + 64] = b"\xff" * 64
    open(path, "wb").write(bytes(data))
    stats = Counter()
    docs = list(read_file(0, path, ReadParams(), stats))
    assert [d.doc_id for d in docs] == list(range(2000))
    assert stats["file_corrupt"] == 1 and stats["errors"] == 1
