import io
import json
from collections import Counter

from preprocess.documents import (
    ReadParams,
    document_source,
    iter_lines,
    read_documents,
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


def test_utf8_bom_is_dropped():
    docs, _ = read(b"\xef\xbb\xbfHello there.\n")
    assert docs[0].lines == ["Hello there."]
