"""Large inputs read in parts, by several workers at once: where a file is cut, and how a part is read.

A single Wikipedia dump is one 20+ GB file; read by one worker, it would keep a cluster
waiting; on Beam's Dask runner a part is also what a worker holds at once (a partition's
outputs, stage by stage). :func:`plan_parts` cuts each uncompressed text and JSON Lines file,
Parquet file and MediaWiki dump larger than the part size into byte ranges ``[start, stop)`` from its size alone (no file is opened while the
job is planned), and the worker that reads a part finds its real boundaries:

* **Parquet**: the row groups whose data starts in the range.
* **bz2 MediaWiki dumps** (``*.xml.bz2``): the bz2 streams of Wikipedia's *multistream*
  layout, each a run of whole ``<page>`` elements. A part owns the page streams that start
  in its range and reads from its first one up to the first page stream at or after
  ``stop``. A stream is found by its magic bytes and checked by decompressing its start
  (a chance match inside compressed data, or a stream that starts mid-page, is passed
  over). A single-stream ``.bz2`` has no page streams: its first part reads all of it and
  the others nothing.
* **Uncompressed dumps** (``*.xml``): the same, with ``<page>`` tags for stream starts
  (inside an article's text a ``<`` is always escaped, so the bytes ``<page>`` are a tag).
* **Uncompressed text and JSON Lines**: document boundaries
  (:func:`preprocess.documents.read_line_part`).

Every page and row belongs to exactly one part, and a document's id does not depend on the
part that read it, so the dataset is the same bytes for any part size. Other inputs
(compressed text and JSON Lines) are read whole, one worker per file.
"""

from __future__ import annotations

import bz2
import re
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

PART_BYTES = 16 << 20  # a Dask worker held ~590 MB at most with parts up to 12.5 MB, ~900 MB with 62 MB
_BZ2_STREAM = re.compile(rb"BZh[1-9]1AY&SY")  # stream header + first block's magic (pi's digits)
_PAGE_TAG = re.compile(rb"<page>")
_WINDOW = 1 << 20
_OVERLAP = 16  # a match that spans two windows is found in the second


class InputPart(NamedTuple):
    """Bytes ``[start, stop)`` of the file at ``file_index`` of the job's inputs; ``stop`` None: to its end."""

    file_index: int
    path: str
    start: int = 0
    stop: int | None = None

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop is None


def splittable(path: str, fmt: str) -> bool:
    """Whether a file of this format and name can be read in parts."""
    name = path.lower()
    if fmt in ("text", "jsonl"):
        return not name.endswith((".gz", ".bz2", ".zst", ".deflate"))
    return fmt == "parquet" or (fmt == "mediawiki" and (name.endswith(".bz2") or name.endswith(".xml")))


def plan_parts(sizes: dict[str, int], formats: dict[str, str], part_bytes: int = PART_BYTES) -> list[InputPart]:
    """The parts of the inputs, in file order: ``sizes`` and ``formats`` by path, in the inputs' order."""
    parts = []
    for index, (path, size) in enumerate(sizes.items()):
        n = -(-size // part_bytes) if splittable(path, formats[path]) else 1
        if n <= 1:
            parts.append(InputPart(index, path))
            continue
        cuts = [k * size // n for k in range(n)] + [None]
        parts += [InputPart(index, path, cuts[k], cuts[k + 1]) for k in range(n)]
    return parts


def largest_first(parts: list[InputPart], sizes: dict[str, int]) -> list[InputPart]:
    """``parts`` from the largest to the smallest (ties in their order): the order the job lists them in.

    Beam's local runner deals a stage's input to its workers in turn, in the order the elements
    came, and Dask runs partitions roughly in index order; dealt largest first, the workers' shares
    of the text differ by at most about the gap between the largest and smallest part, where the
    order of the files let them differ by whole parts. Which part holds which documents does not
    change, so neither does the output.
    """
    def size(part: InputPart) -> int:
        return (sizes[part.path] if part.stop is None else part.stop) - part.start

    return sorted(parts, key=size, reverse=True)  # sorted is stable: ties keep their order


def dump_part(raw: BinaryIO, start: int, stop: int | None, compressed: bool) -> BinaryIO | None:
    """The XML of one part of a dump (``raw``: the file's bytes, seekable), a stream of whole ``<page>``
    elements inside a ``<mediawiki>`` root; None when the part owns no page."""
    size = raw.seek(0, 2)
    stop = size if stop is None else min(stop, size)
    find = _next_page_stream if compressed else _next_page_tag
    begin = 0 if start == 0 else find(raw, start, stop)
    if begin is None:
        return None
    end = find(raw, stop, size) if stop < size else None
    end = size if end is None else end
    body: BinaryIO = _Range(raw, begin, end)
    if compressed:
        body = bz2.BZ2File(body)  # reads one stream after another
    return _Concat(b"<mediawiki>" if begin > 0 else b"", body, b"</mediawiki>" if end < size else b"")


def _next_page_stream(raw: BinaryIO, start: int, limit: int) -> int | None:
    """Offset of the first bz2 stream starting in ``[start, limit)`` whose text begins with ``<page>``."""
    for offset in _matches(raw, _BZ2_STREAM, start, limit):
        if _stream_starts_with_page(raw, offset):
            return offset
    return None


def _next_page_tag(raw: BinaryIO, start: int, limit: int) -> int | None:
    return next(_matches(raw, _PAGE_TAG, start, limit), None)


def _matches(raw: BinaryIO, pattern: re.Pattern, start: int, limit: int) -> Iterator[int]:
    """Offsets in ``[start, limit)`` where ``pattern`` matches, in order, reading a window at a time."""
    pos = start
    while pos < limit:
        raw.seek(pos)
        window = raw.read(_WINDOW + _OVERLAP)
        if not window:
            return
        for m in pattern.finditer(window):
            if pos + m.start() >= limit:
                return
            if m.start() < _WINDOW or len(window) <= _WINDOW:  # else the next window reports it
                yield pos + m.start()
        pos += _WINDOW


def _stream_starts_with_page(raw: BinaryIO, offset: int) -> bool:
    raw.seek(offset)
    decompressor, text = bz2.BZ2Decompressor(), b""
    try:
        while len(text.lstrip()) < 6 and not decompressor.eof:
            chunk = raw.read(1 << 16)
            if not chunk:
                break
            text += decompressor.decompress(chunk)
    except (OSError, EOFError):  # not a stream after all
        return False
    return text.lstrip().startswith(b"<page>")


class _Range:
    """Bytes ``[start, stop)`` of a seekable file, as a readable stream."""

    def __init__(self, raw: BinaryIO, start: int, stop: int):
        self.raw, self.pos, self.stop = raw, start, stop

    def read(self, n: int = -1) -> bytes:
        n = self.stop - self.pos if n is None or n < 0 else min(n, self.stop - self.pos)
        if n <= 0:
            return b""
        self.raw.seek(self.pos)
        data = self.raw.read(n)
        self.pos += len(data)
        return data

    def readable(self) -> bool:
        return True


class _Concat:
    """``head``, then the stream, then ``tail``, as one readable stream."""

    def __init__(self, head: bytes, stream: BinaryIO, tail: bytes):
        self.pending, self.stream, self.tail = head, stream, tail

    def read(self, n: int = -1) -> bytes:
        if self.pending:
            out, self.pending = self.pending, b""
            return out
        data = self.stream.read(n)
        if data:
            return data
        out, self.tail = self.tail, b""
        return out
