from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from preprocess.documents import Document, ReadParams, document_id, document_source
from preprocess.inputs import read_file


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
