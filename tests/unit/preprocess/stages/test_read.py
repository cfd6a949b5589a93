"""Stage 1: reading files into documents, and sentence segmentation."""

import gzip

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocess.documents import Document, ReadParams, document_id
from preprocess.stages.read import ReadCorpus, SplitSentences


def test_read_corpus_reads_text_and_gzip_and_counts_bad_files(tmp_path):
    (tmp_path / "a.txt").write_text("Doc one.\n\nDoc two.\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("Zipped doc.\n")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(b"Before the cut.\n\n" + b"x" * 5000)[:40])
    files = [(i, str(tmp_path / n), 0, None) for i, n in enumerate(["a.txt", "b.txt.gz", "c.bin", "d.txt.gz"])]
    with TestPipeline() as p:
        out = p | beam.Create(files) | ReadCorpus(ReadParams())
        docs, stats = out["documents"] | beam.FlatMap(lambda batch: batch), out["stats"]
        assert_that(docs | beam.Map(lambda d: (d.doc_id, d.lines)), equal_to([
            (document_id(0, 0), ["Doc one."]),
            (document_id(0, 10), ["Doc two."]),
            (document_id(1, 0), ["Zipped doc."]),
        ]), label="docs")
        totals = stats | beam.Map(lambda kv: kv[1]) | beam.FlatMap(dict.items) | beam.CombinePerKey(sum)
        assert_that(
            totals | beam.Filter(lambda kv: kv[0] in ("file_binary", "file_corrupt", "files")),
            equal_to([("file_binary", 1), ("file_corrupt", 1), ("files", 4)]),
            label="stats",
        )


def test_split_sentences():
    with TestPipeline() as p:
        out = p | beam.Create([[Document(5, ["One here. Two here.", "Three"]), Document(6, ["Four."])]]) | SplitSentences(
            "en")
        assert_that(out, equal_to([[(5, ["One here.", "Two here.", "Three"]), (6, ["Four."])]]))


def test_documents_leave_in_batches_of_one_file(tmp_path):
    from preprocess.stages.read import DOCUMENTS_PER_BATCH, _ReadFileFn

    (tmp_path / "a.txt").write_text("".join(f"Document {i}.\n\n" for i in range(DOCUMENTS_PER_BATCH + 3)))
    out = list(_ReadFileFn(ReadParams()).process((0, str(tmp_path / "a.txt"), 0, None)))
    assert [(tag, len(v) if tag == "documents" else v[0]) for tag, v in out] == [
        ("documents", DOCUMENTS_PER_BATCH), ("documents", 3), ("stats", "documents")]


def test_a_batch_closes_at_its_size_in_text_too(tmp_path):
    from preprocess.stages.read import BATCH_TEXT_BYTES, _ReadFileFn

    line = "word " * (BATCH_TEXT_BYTES // 120)  # six lines: just under a quarter of a batch
    (tmp_path / "big.txt").write_text("".join(f"{line}\n" * 6 + "\n" for _ in range(12)))
    out = list(_ReadFileFn(ReadParams()).process((0, str(tmp_path / "big.txt"), 0, None)))
    assert [len(v) for tag, v in out if tag == "documents"] == [5, 5, 2]
