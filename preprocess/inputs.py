"""Reading one input, whole or in part, in any of the formats: which format, which reader, faults counted.

The formats (:func:`file_format` picks one by extension unless ``--input-format`` says):
text and JSON Lines (:mod:`preprocess.documents`), Parquet (:mod:`preprocess.parquet_input`)
and MediaWiki XML dumps (:mod:`preprocess.mediawiki`); large Parquet files and dumps are
read in parts (:mod:`preprocess.input_parts`). The preprocessing job and ``bert-train-vocab``
both read through :func:`read_file`, so they see the same documents.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Iterator

from preprocess.documents import (
    COMPRESSED,
    Document,
    ReadParams,
    open_input,
    read_documents,
    read_line_part,
)
from preprocess.input_parts import dump_part
from preprocess.parquet_input import parquet_documents

FORMATS = ("text", "jsonl", "parquet", "mediawiki")
log = logging.getLogger("preprocess")


def file_format(path: str, params: ReadParams) -> str:
    """``params.input_format``, or for "auto" the format the extension names (text otherwise)."""
    if params.input_format != "auto":
        return params.input_format
    name = path.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".xml"):
        return "mediawiki"
    return "text"


def read_file(
    file_index: int, path: str, params: ReadParams, stats: Counter, start: int = 0, stop: int | None = None
) -> Iterator[Document]:
    """The documents of one input file, or of its part ``[start, stop)`` (:mod:`preprocess.input_parts`);
    skips and faults are counted in ``stats`` by reason (a file's own faults by its first part only).

    A file that breaks mid-stream (corrupt compressed data, truncated XML or Parquet)
    keeps the documents read before the fault; the fault is counted (``file_corrupt``, or
    ``file_unreadable`` when nothing could be read) and logged with the file's name.
    """
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if start == 0:
        stats["files"] += 1
    fmt = file_format(path, params)
    try:
        if fmt == "parquet":
            yield from parquet_documents(path, file_index, params, stats, start, stop)
        elif start == 0 and stop is None:
            with open_input(path) as f:
                yield from read_documents(f, file_index, fmt, params, stats)
        elif fmt in ("text", "jsonl"):  # a part of an uncompressed file
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
                yield from read_line_part(raw, file_index, fmt, params, stats, start, stop)
        else:  # a part of a dump
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
                part = dump_part(raw, start, stop, compressed=path.lower().endswith(".bz2"))
                if part is not None:
                    yield from read_documents(part, file_index, fmt, params, stats)
    except (OSError, EOFError, ValueError, zlib.error) as e:
        # Corrupt compressed data raises one of these mid-stream: documents already
        # yielded are kept, the rest of the file is lost and counted.
        opened = stats["documents_read"] > 0 or stats["line_invalid_utf8"] > 0
        stats["file_corrupt" if opened or path.lower().endswith(COMPRESSED) else "file_unreadable"] += 1
        stats["errors"] += 1
        log.warning("input %s: %s: %s (counted, job continues)", path, type(e).__name__, e)
