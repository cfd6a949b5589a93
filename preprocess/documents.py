"""Reading raw corpora into documents, without losing good data to bad input.

The formats of streams (:mod:`preprocess.inputs` reads any input, Parquet included):

* plain text, one document per blank-line-separated block (Google's BERT layout; lines
  may be sentences or whole paragraphs);
* JSON Lines, one document per line in a configurable text field;
* MediaWiki XML dumps (Wikipedia's ``*-pages-articles*.xml.bz2``), one document per
  article, its paragraphs as lines (:mod:`preprocess.mediawiki`).

Text, JSON Lines and XML may be gzip/bz2/zstd compressed. Every file is opened through
Beam's filesystems, which pick the codec from the extension and reach gs://, s3:// and
hdfs:// where the Beam extra is installed.

Bad input is skipped item by item and counted in ``stats`` by reason (the manifest's
``documents`` section; the README's table says what each reason means):

* a binary file (many control bytes, or a mostly undecodable start) is skipped whole;
* an empty file, a corrupt or truncated compressed stream (documents read before the
  fault are kept), an unreadable file;
* invalid UTF-8 inside a line is replaced (U+FFFD, which the tokenizer drops, as the
  reference's ``errors="ignore"`` does) and the line counted;
* a line longer than ``max_line_bytes`` is cut at whitespace into pieces; a document
  larger than ``max_document_bytes`` is split at a line boundary;
* a JSON line that does not parse, is not an object or lacks the text field;
* a dump's pages that are not articles (:mod:`preprocess.mediawiki` lists the reasons).

Documents get stable 64-bit ids, ``file_index << 40 | place``: ``file_index`` is the
position of the file in the sorted list of matched inputs, which the manifest records,
and ``place`` says where the document is in it: the byte offset of the document in the
(uncompressed) text or JSON Lines file, the row number in a Parquet file, the page id in
a MediaWiki dump.
"""

from __future__ import annotations

import bz2
import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

FILE_INDEX_BITS = 24
OFFSET_BITS = 40
MAX_FILES = 1 << FILE_INDEX_BITS
MAX_OFFSET = 1 << OFFSET_BITS
COMPRESSED = (".gz", ".bz2", ".zst", ".deflate")


@dataclass(frozen=True)
class ReadParams:
    input_format: str = "auto"  # auto or one of preprocess.inputs.FORMATS
    text_field: str = "text"
    max_line_bytes: int = 1 << 20
    max_document_bytes: int = 16 << 20
    max_json_line_bytes: int = 256 << 20


class Document(NamedTuple):
    doc_id: int
    lines: list[str]


def open_input(path: str) -> BinaryIO:
    """Open an input through Beam's filesystems, decompressing by extension.

    gzip and bz2 are decoded with Python's own modules, which raise ``EOFError`` on
    a truncated stream; Beam's decompressor silently returns the partial data.
    Other codecs (zstd, deflate) are left to Beam.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    name = path.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    if name.endswith(".bz2"):
        return bz2.BZ2File(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    return FileSystems.open(path)


def document_id(file_index: int, offset: int) -> int:
    return (file_index << OFFSET_BITS) | offset


def document_source(doc_id: int) -> tuple[int, int]:
    """(file index, byte offset) of a document id."""
    return doc_id >> OFFSET_BITS, doc_id & (MAX_OFFSET - 1)


def iter_lines(
    stream: BinaryIO, max_line_bytes: int, stats: Counter, chunk_size: int = 1 << 20, base: int = 0
) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line without newline, cut) for each line; lines over the cap come in pieces.

    ``cut`` is True for a piece that the line continues after (the cut is counted).
    ``base``: the offset in its file of the stream's first byte.
    Memory stays bounded by ``chunk_size + max_line_bytes`` whatever the input, so a
    50 MB line costs no more than a short one.
    """
    buf = bytearray()  # base: file offset of buf[0]
    eof = False
    while True:
        nl = buf.find(b"\n")
        if nl >= 0 and nl <= max_line_bytes:
            yield base, bytes(buf[:nl]), False
            del buf[: nl + 1]
            base += nl + 1
            continue
        if len(buf) > max_line_bytes:
            cut = _cut_point(buf, max_line_bytes)
            stats["line_too_long_split"] += 1
            yield base, bytes(buf[:cut]), True
            del buf[:cut]
            base += cut
            continue
        if eof:
            if buf:
                yield base, bytes(buf), False
            return
        chunk = stream.read(chunk_size)
        if not chunk:
            eof = True
        else:
            buf += chunk


def _cut_point(buf: bytearray, limit: int) -> int:
    """Last whitespace before ``limit``, else the last UTF-8 character boundary."""
    for ws in (b" ", b"\t"):
        i = buf.rfind(ws, limit // 2, limit)
        if i > 0:
            return i + 1
    i = limit
    while i > 0 and (buf[i] & 0xC0) == 0x80:  # continuation byte: step back to a lead byte
        i -= 1
    return i or limit


def decode_line(raw: bytes, stats: Counter) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        stats["line_invalid_utf8"] += 1
        return raw.decode("utf-8", errors="replace")


_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\v\x1b")


def looks_binary(head: bytes) -> bool:
    """Over 10% NUL/control bytes, or under 70% of the first bytes decode as UTF-8.

    A stray NUL or bell in a text file does not make it binary: BERT's normaliser
    drops such characters anyway.
    """
    if not head:
        return False
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    if controls > 0.1 * len(head):
        return True
    decoded = head.decode("utf-8", errors="replace")
    return decoded.count("\ufffd") > 0.3 * len(decoded)


class _PeekStream:
    """Lets the reader look at the first bytes of a stream, then read it from the start."""

    def __init__(self, stream: BinaryIO, size: int):
        self._stream = stream
        self.head = stream.read(size)
        self._pending = self.head

    def read(self, n: int) -> bytes:
        if self._pending:
            out, self._pending = self._pending[:n], self._pending[n:]
            return out
        return self._stream.read(n)


def read_documents(
    stream: BinaryIO, file_index: int, fmt: str, params: ReadParams, stats: Counter
) -> Iterator[Document]:
    """Documents of one open file (or of the first part of one); counts what it skips into ``stats``."""
    peek = _PeekStream(stream, 8192)
    head = peek.head
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    if not head:
        stats["file_empty"] += 1
        return
    if looks_binary(head):
        stats["file_binary"] += 1
        return
    if fmt == "jsonl":
        yield from _jsonl_documents(peek, file_index, params, stats)
    elif fmt == "mediawiki":
        # mwparserfromhell: imported where dumps are read
        from preprocess.mediawiki import dump_documents

        for page_id, lines in dump_documents(peek, stats):
            yield from _emit(file_index, page_id, lines, stats)
    else:
        yield from _text_documents(peek, file_index, params, stats)


def read_line_part(raw: BinaryIO, file_index: int, fmt: str, params: ReadParams, stats: Counter, start: int,
                   stop: int | None) -> Iterator[Document]:
    """Documents of the part ``[start, stop)`` of an uncompressed text or JSON Lines file (``raw``: seekable).

    A part reads from the first document boundary at or after ``start`` to the first at or after
    ``stop`` (:func:`_next_boundary`), so consecutive parts meet at the same boundary and every
    document is read once, with the id and lines the whole file's reading gives it. The first part
    checks the file's start (empty, binary) and counts it; the others skip a file it rules out.
    """
    size = raw.seek(0, 2)
    end = size if stop is None or stop >= size else _next_boundary(raw, stop, fmt, params)
    begin = 0 if start == 0 else _next_boundary(raw, start, fmt, params)
    if begin >= end:
        return
    if start == 0:
        raw.seek(0)
        yield from read_documents(_Window(raw, end), file_index, fmt, params, stats)
        return
    raw.seek(0)
    head = raw.read(8192).removeprefix(b"\xef\xbb\xbf")
    if not head or looks_binary(head):
        return  # counted by the first part
    raw.seek(begin)
    read = _jsonl_documents if fmt == "jsonl" else _text_documents
    yield from read(_Window(raw, end - begin), file_index, params, stats, base=begin)


def _next_boundary(raw: BinaryIO, pos: int, fmt: str, params: ReadParams) -> int:
    """The first place at or after ``pos`` where the whole file's reading starts a document afresh
    (the file's size if none): for JSON Lines the next line; for text the first non-blank line
    after a blank one. Lines are cut and judged blank exactly as the reader does, from a line start."""
    size = raw.seek(0, 2)
    raw.seek(pos - 1)
    cap = params.max_json_line_bytes if fmt == "jsonl" else params.max_line_bytes
    scratch: Counter = Counter()
    lines = iter_lines(_Window(raw, size - pos + 1), cap, scratch)
    for _, _, cut in lines:  # the rest of the line byte pos - 1 is in (its pieces, if cut)
        if not cut:
            break
    after_blank = False
    for offset, line, _ in lines:
        at = pos - 1 + offset
        if fmt == "jsonl":
            return at
        blank = not decode_line(line, scratch).strip()
        if after_blank and not blank:
            return at
        after_blank = blank
    return size


class _Window:
    """The next ``length`` bytes of a stream."""

    def __init__(self, stream: BinaryIO, length: int):
        self.stream, self.left = stream, length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        return data


def _text_documents(stream, file_index: int, params: ReadParams, stats: Counter, base: int = 0) -> Iterator[Document]:
    lines: list[str] = []
    start = 0
    size = 0
    for offset, raw, _ in iter_lines(stream, params.max_line_bytes, stats, base=base):
        if offset == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        line = decode_line(raw, stats).strip()
        if not line:
            if lines:
                yield from _emit(file_index, start, lines, stats)
                lines = []
            continue
        if lines and size + len(raw) > params.max_document_bytes:
            stats["document_too_large_split"] += 1
            yield from _emit(file_index, start, lines, stats)
            lines = []
        if not lines:
            start, size = offset, 0
        lines.append(line)
        size += len(raw)
    if lines:
        yield from _emit(file_index, start, lines, stats)


def _jsonl_documents(stream, file_index: int, params: ReadParams, stats: Counter, base: int = 0
                     ) -> Iterator[Document]:
    cut_stats: Counter = Counter()  # cuts of JSON lines are skips, not line splits
    skipping = False
    for offset, raw, cut in iter_lines(stream, params.max_json_line_bytes, cut_stats, base=base):
        if cut or skipping:
            if not skipping:
                stats["json_line_too_long"] += 1
            skipping = cut  # skip pieces up to and including the line's last one
            continue
        if offset == 0 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        text = _json_text(raw, params.text_field, stats)
        if text is not None:
            yield from text_document(file_index, offset, text, stats)


def text_document(file_index: int, place: int, text: str, stats: Counter) -> Iterator[Document]:
    """A document whose text is one string (a JSON field, a Parquet cell): its non-blank lines."""
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    if lines:
        yield from _emit(file_index, place, lines, stats)


def _json_text(raw: bytes, field: str, stats: Counter) -> str | None:
    if not raw.strip():
        return None
    try:
        obj = json.loads(decode_line(raw, stats))
    except ValueError:
        stats["json_invalid"] += 1
        return None
    if not isinstance(obj, dict):
        stats["json_invalid"] += 1
        return None
    text = obj.get(field)
    if not isinstance(text, str):
        stats["json_missing_field"] += 1
        return None
    return text


def _emit(file_index: int, offset: int, lines: list[str], stats: Counter) -> Iterator[Document]:
    if offset >= MAX_OFFSET:
        stats["document_offset_overflow"] += 1
        return
    stats["documents_read"] += 1
    yield Document(document_id(file_index, offset), lines)
