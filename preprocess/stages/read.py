"""Stage 1, read and segment: input parts (file index, path, start, stop) -> batches of documents -> of (doc_id, sentences).

:func:`~preprocess.inputs.read_file` reads one input file into documents, counting what it
skips; a file that breaks mid-stream keeps the documents read before the fault. Documents leave in
batches of one file of up to :data:`BATCH_TEXT_BYTES` of text or :data:`DOCUMENTS_PER_BATCH`
documents, the unit the tokenizer encodes and pairing pairs at once (large enough that the bucket
shuffle's references, one per batch and bucket, stay few; see :mod:`preprocess.sizing`) (batched here, in ``process``, rather than by ``BatchElements``, whose last batch
of a bundle is emitted from ``finish_bundle``: see :mod:`preprocess.runners`).
"""

from __future__ import annotations

from collections import Counter

import apache_beam as beam

from preprocess import progress
from preprocess.documents import Document, ReadParams
from preprocess.inputs import read_file
from preprocess.sentences import split_sentences
from preprocess.stages.counting import NAMESPACE, STATS, ByTag, count

DOCUMENTS_PER_BATCH = 4096
BATCH_TEXT_BYTES = 4 << 20
DOCUMENTS = "documents"


class _ReadFileFn(beam.DoFn):
    def __init__(self, params: ReadParams):
        self.params = params

    def process(self, item: tuple[int, str, int, int | None]):  # an InputPart
        file_index, path, start, stop = item
        stats: Counter = Counter()
        batch: list[Document] = []
        text = 0
        for doc in read_file(file_index, path, self.params, stats, start, stop):
            batch.append(doc)
            text += sum(len(line) for line in doc.lines)
            if len(batch) == DOCUMENTS_PER_BATCH or text >= BATCH_TEXT_BYTES:  # large files report as they go
                progress.report(documents=len(batch), text_bytes=text)
                yield DOCUMENTS, batch
                batch, text = [], 0
        progress.report(files=1, documents=len(batch), text_bytes=text)
        progress.flush()
        if batch:
            yield DOCUMENTS, batch
        errors = stats.pop("errors", 0)
        if errors:
            beam.metrics.Metrics.counter(NAMESPACE, "errors").inc(errors)
        yield count(stats, "documents")


class ReadCorpus(beam.PTransform):
    """(file index, path, start, stop) of each input part -> ``documents`` (lists of Document) and ``stats``."""

    def __init__(self, params: ReadParams):
        super().__init__()
        self.params = params

    def expand(self, files: beam.PCollection):  # -> {tag: PCollection}, see ByTag.expand
        return files | "ReadFiles" >> beam.ParDo(_ReadFileFn(self.params)) | ByTag(DOCUMENTS, STATS)


class SplitSentences(beam.PTransform):
    """[Document, ...] -> [(doc_id, [sentence, ...]), ...]."""

    def __init__(self, language: str):
        super().__init__()
        self.language = language

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        language = self.language
        return batches | beam.Map(lambda docs: [(d.doc_id, split_sentences(d.lines, language)) for d in docs])
