import bz2
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocess.documents import ReadParams
from preprocess.input_parts import InputPart, plan_parts
from preprocess.inputs import read_file
from tests.wiki_dump import dump_xml, write_dump

PAGES = [{"page_id": 3 * i + 1, "title": f"Page {i}", "text": f"'''Page {i}''' is [[article]] number {i}.\n\n"
          f"A second paragraph of page {i}.<ref>note</ref>", **({"ns": 1} if i % 9 == 4 else {})}
         for i in range(400)]


FORMATS = {".parquet": "parquet", ".txt": "text", ".jsonl": "jsonl"}


DEFAULTS = ReadParams()


def read_in_parts(path, part_bytes, params=DEFAULTS):
    """Documents and counts of a file read part by part, as the job's workers read it."""
    fmt = FORMATS.get(path.suffix, "mediawiki")
    parts = plan_parts({str(path): path.stat().st_size}, {str(path): fmt}, part_bytes)
    stats, docs = Counter(), []
    for part in parts:
        docs += read_file(part.file_index, part.path, params, stats, part.start, part.stop)
    return docs, stats, parts


def whole(path, params=DEFAULTS):
    stats = Counter()
    return list(read_file(0, str(path), params, stats)), stats


def awkward_text():
    """Text with what a cut could fall on: a BOM, blank runs, whitespace-only and CRLF lines, lines
    longer than the reader's cap, a document larger than its cap, invalid UTF-8, no final newline."""
    out = ["\ufeff\n\n"]
    for i in range(300):
        body = [f"Document {i} says something.", f"And a second line of {i}."]
        if i % 7 == 0:
            body.append("word " * (400 + i))  # over max_line_bytes: cut into pieces
        if i % 11 == 0:
            body += [f"more of {i} " * 40 for _ in range(12)]  # over max_document_bytes: split
        if i % 13 == 0:
            body.append("  \t ")  # whitespace only: blank
        sep = "\r\n" if i % 5 == 0 else "\n"
        out.append(sep.join(body) + sep + ("\n \n\n" if i % 3 == 0 else "\n"))
    return ("".join(out) + "tail without newline").encode() + b"\xff bad byte\n"


def test_only_splittable_files_are_cut_and_the_parts_cover_them():
    sizes = {"a.parquet": 10_000, "b.xml.bz2": 2_500, "c.txt": 2_500, "d.xml": 999, "e.jsonl.gz": 9_000,
             "f.txt.gz": 9_000, "g.jsonl": 1_500}
    formats = {"a.parquet": "parquet", "b.xml.bz2": "mediawiki", "c.txt": "text", "d.xml": "mediawiki",
               "e.jsonl.gz": "jsonl", "f.txt.gz": "text", "g.jsonl": "jsonl"}
    parts = plan_parts(sizes, formats, part_bytes=1000)
    assert [p for p in parts if p.path != "a.parquet"] == [
        InputPart(1, "b.xml.bz2", 0, 833), InputPart(1, "b.xml.bz2", 833, 1666), InputPart(1, "b.xml.bz2", 1666, None),
        InputPart(2, "c.txt", 0, 833), InputPart(2, "c.txt", 833, 1666), InputPart(2, "c.txt", 1666, None),
        InputPart(3, "d.xml"), InputPart(4, "e.jsonl.gz"), InputPart(5, "f.txt.gz"),
        InputPart(6, "g.jsonl", 0, 750), InputPart(6, "g.jsonl", 750, None)]
    a = [p for p in parts if p.path == "a.parquet"]
    assert len(a) == 10 and a[0].start == 0 and a[-1].stop is None
    assert all(x.stop == y.start for x, y in zip(a, a[1:]))


@pytest.mark.parametrize("part_bytes", [4096, 5000, 17_000, 1 << 30])
def test_a_text_file_read_in_parts_gives_the_documents_of_the_whole(tmp_path, part_bytes):
    path = tmp_path / "awkward.txt"
    path.write_bytes(awkward_text())
    params = ReadParams(max_line_bytes=1024, max_document_bytes=2048)
    expected, expected_stats = whole(path, params)
    docs, stats, parts = read_in_parts(path, part_bytes, params)
    assert len(parts) == -(-path.stat().st_size // part_bytes) and (len(parts) > 10 or part_bytes > 5000)
    assert docs == expected and stats == expected_stats
    assert expected_stats["line_too_long_split"] and expected_stats["document_too_large_split"]


@pytest.mark.parametrize("part_bytes", [4096, 7001])
def test_a_json_lines_file_read_in_parts_gives_the_documents_of_the_whole(tmp_path, part_bytes):
    lines = [json.dumps({"text": f"Line {i}.\nSecond {i}." + " pad" * (i % 50)}) for i in range(600)]
    lines[17] = "{not json"
    lines[40] = json.dumps({"text": "long " * 2000})  # over the cap: skipped in pieces
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    params = ReadParams(max_json_line_bytes=4096)
    expected, expected_stats = whole(path, params)
    docs, stats, parts = read_in_parts(path, part_bytes, params)
    assert len(parts) > 5 and docs == expected and stats == expected_stats
    assert expected_stats["json_invalid"] == 1 and expected_stats["json_line_too_long"] == 1


def test_a_binary_text_file_read_in_parts_is_counted_once(tmp_path):
    path = tmp_path / "noise.txt"
    path.write_bytes(bytes(range(256)) * 100)
    docs, stats, parts = read_in_parts(path, 4096)
    assert len(parts) == 7 and docs == [] and stats == Counter({"files": 1, "file_binary": 1})


@pytest.mark.parametrize("pieces", [40, 3])
@pytest.mark.parametrize("layout", ["multistream.xml.bz2", "plain.xml", "one-stream.xml.bz2", "cut-streams.xml.bz2"])
def test_a_dump_read_in_parts_gives_the_documents_of_the_whole(tmp_path, layout, pieces):
    path = tmp_path / layout
    if layout == "cut-streams.xml.bz2":  # streams that start mid-page (as pbzip2 writes): never a boundary
        xml = dump_xml(PAGES).encode()
        path.write_bytes(b"".join(bz2.compress(xml[i : i + 3000]) for i in range(0, len(xml), 3000)))
    else:
        write_dump(path, PAGES, streams_of=10 if layout.startswith("multi") else 0)
    docs, stats, parts = read_in_parts(path, -(-path.stat().st_size // pieces))
    expected, expected_stats = whole(path)
    assert len(expected) == 400 - 44 and docs == expected and stats == expected_stats
    assert len(parts) == pieces
    if layout.startswith(("multi", "plain")):  # parts hold pages: the work is shared
        per_part = [len(list(read_file(0, p.path, ReadParams(), Counter(), p.start, p.stop))) for p in parts]
        assert sum(n > 0 for n in per_part) >= (3 if pieces == 3 else 20)


def test_a_parquet_file_read_in_parts_gives_the_documents_of_the_whole(tmp_path):
    texts = [f"Document {i}.\nIts second line." if i % 50 else None for i in range(3000)]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), path, row_group_size=100)
    expected, expected_stats = whole(path)
    for part_bytes in (2_000, 10_000, 1 << 30):
        docs, stats, parts = read_in_parts(path, part_bytes)
        assert docs == expected and stats == expected_stats
    assert len(parts) == 1 and len(read_in_parts(path, 2_000)[2]) > 10


def test_a_bad_file_read_in_parts_is_counted_once(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"not parquet at all " * 500)
    docs, stats, parts = read_in_parts(path, 1000)
    assert len(parts) == 10 and docs == [] and stats == Counter({"files": 1, "file_not_parquet": 1})


def test_parts_are_listed_largest_first_so_that_workers_dealt_them_in_turn_get_even_shares():
    from preprocess.input_parts import largest_first

    sizes = {"a.txt": 100, "b.txt": 2500, "c.txt": 700, "d.txt": 700}
    parts = plan_parts(sizes, dict.fromkeys(sizes, "text"), part_bytes=1000)  # b.txt: 833, 833 and 834 bytes
    ordered = largest_first(parts, sizes)
    assert sorted(ordered) == sorted(parts)
    assert [(p.path, p.start) for p in ordered] == [("b.txt", 1666), ("b.txt", 0), ("b.txt", 833), ("c.txt", 0),
                                                    ("d.txt", 0), ("a.txt", 0)]
    shares = [sum((p.stop or sizes[p.path]) - p.start for p in ordered[k::2]) for k in range(2)]
    assert abs(shares[0] - shares[1]) <= 834 - 100  # dealt in turn: apart by at most largest - smallest
