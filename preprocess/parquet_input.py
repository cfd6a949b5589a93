"""Parquet inputs: one document per row of the text column, read a row group at a time.

Memory is one row group's text column, never the file. A document's id is
``file_index << 40 | row`` (:func:`~preprocess.documents.document_id`): the row of the file
that holds it. A file that is not Parquet, lacks the text column (``--text-field``) or
holds something else than text there is skipped whole, counted and logged with its name
and columns; a null text is counted; a damaged row group ends the file, keeping the rows
before it (:func:`~preprocess.inputs.read_file` counts the fault).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from preprocess.documents import Document, ReadParams, text_document

ROWS_PER_BATCH = 1024  # rows of a row group made Python strings at once
log = logging.getLogger("preprocess")


def parquet_documents(
    path: str, file_index: int, params: ReadParams, stats: Counter, start: int = 0, stop: int | None = None
) -> Iterator[Document]:
    """One document per row of the text column, read a row group at a time; the id's place is the row.
    A part ``[start, stop)`` reads the row groups whose data starts in it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    field, first = params.text_field, start == 0  # the first part counts and reports the file's faults
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as e:
            if first and f.seek(0, 2) == 0:
                stats["file_empty"] += 1
            elif first:
                stats["file_not_parquet"] += 1
                log.warning("input %s: not a Parquet file (%s); skipped, job continues", path, e)
            return
        names = pf.schema_arrow.names
        if field not in names:
            if first:
                stats["parquet_missing_column"] += 1
                log.warning("input %s: no column %r (it has %s); give the text's column with --text-field; "
                            "file skipped, job continues", path, field, ", ".join(map(repr, names)))
            return
        kind = pf.schema_arrow.field(field).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or str(kind) == "string_view"):
            if first:
                stats["parquet_column_not_text"] += 1
                log.warning("input %s: column %r holds %s, not text; file skipped, job continues", path, field, kind)
            return
        row, stop = 0, float("inf") if stop is None else stop
        for group in range(pf.num_row_groups):
            meta = pf.metadata.row_group(group)
            if not start <= _row_group_offset(meta) < stop:
                row += meta.num_rows
                continue
            try:
                column = pf.read_row_group(group, columns=[field], use_threads=False).column(0)
            except (pa.ArrowException, OSError) as e:  # a damaged row group: the rows before it are kept
                raise ValueError(f"row group {group} (from row {row}) is damaged: {e}") from None
            for chunk in column.chunks:
                for begin in range(0, len(chunk), ROWS_PER_BATCH):
                    for text in chunk.slice(begin, ROWS_PER_BATCH).to_pylist():
                        if text is None:
                            stats["parquet_null_text"] += 1
                        else:
                            yield from text_document(file_index, row, text, stats)
                        row += 1


def _row_group_offset(meta) -> int:
    """Where a row group's data starts in its file (its first column's first page)."""
    col = meta.column(0)
    offsets = [col.data_page_offset]
    if col.has_dictionary_page and col.dictionary_page_offset:
        offsets.append(col.dictionary_page_offset)
    return min(offsets)
