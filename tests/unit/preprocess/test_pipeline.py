"""Each PTransform of the job under Beam's TestPipeline, on a few in-memory elements."""

import gzip

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocess.documents import Document, ReadParams, document_id
from preprocess.masking import MaskingParams
from preprocess.packed import DocumentBatch
from preprocess.pairs import PairingParams
from preprocess.pipeline import (
    CreatePairs,
    MaskInstances,
    ReadCorpus,
    SplitSentences,
    TokenizeDocuments,
    WriteShards,
    bucket_of,
    in_validation,
)
from preprocess.shards import RowSpec
from preprocess.tokenization import TokenizerSpec, build_tokenizer, vocab_info


def test_read_corpus_reads_text_and_gzip_and_counts_bad_files(tmp_path):
    (tmp_path / "a.txt").write_text("Doc one.\n\nDoc two.\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("Zipped doc.\n")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / "d.txt.gz").write_bytes(gzip.compress(b"Before the cut.\n\n" + b"x" * 5000)[:40])
    files = [(i, str(tmp_path / n)) for i, n in enumerate(["a.txt", "b.txt.gz", "c.bin", "d.txt.gz"])]
    with TestPipeline() as p:
        docs, stats = p | beam.Create(files) | ReadCorpus(ReadParams())
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
        out = p | beam.Create([Document(5, ["One here. Two here.", "Three"])]) | SplitSentences("en")
        assert_that(out, equal_to([(5, ["One here.", "Two here.", "Three"])]))


def test_tokenize_batches_cuts_long_sentences_and_drops_empty_documents(vocab_file):
    spec = TokenizerSpec(vocab_file)
    tok = build_tokenizer(spec)
    long_sentence = " ".join(["value"] * 40)
    with TestPipeline() as p:
        out = (
            p
            | beam.Create([(1, ["Return the value.", long_sentence]), (2, ["\x07\x08"])])
            | TokenizeDocuments(spec, max_sentence_tokens=16)
        )
        docs = out.train | beam.FlatMap(
            lambda b: [(int(d), b.take([i]).lengths.tolist(), int(b.sizes[i])) for i, d in enumerate(b.doc_id)])
        first = len(tok.encode("Return the value.", add_special_tokens=False).ids)
        assert_that(docs, equal_to([(1, [first, 16, 16, 8], first + 40)]), label="docs")
        counts = out.stats | beam.Map(lambda kv: kv[1]) | beam.FlatMap(dict.items) | beam.CombinePerKey(sum)
        assert_that(
            counts | beam.Filter(lambda kv: kv[0] in ("document_no_tokens", "sentences_cut_long")),
            equal_to([("document_no_tokens", 1), ("sentences_cut_long", 1)]),
            label="stats",
        )


def test_tokenize_routes_documents_to_their_split(vocab_file):
    spec = TokenizerSpec(vocab_file)
    ids = list(range(200))
    expected = in_validation(np.array(ids, dtype=np.uint64), 0.2)
    with TestPipeline() as p:
        out = p | beam.Create([(i, [f"Sentence number {i}."]) for i in ids]) | TokenizeDocuments(
            spec, max_sentence_tokens=16, validation_fraction=0.2)
        for split, want in (("train", ~expected), ("validation", expected)):
            got = out[split] | f"Ids[{split}]" >> beam.FlatMap(lambda b: b.doc_id.tolist())
            assert_that(got, equal_to([i for i in ids if want[i]]), label=split)


def _docs(n=12):
    r = np.random.default_rng(0)
    lengths = r.integers(3, 12, 8 * n)
    batch = DocumentBatch(np.arange(n, dtype=np.uint64), np.full(n, 8), lengths,
                          r.integers(5, 300, int(lengths.sum())).astype(np.uint16))
    return [batch.take(np.arange(i, min(i + 5, n))) for i in range(0, n, 5)]


def test_create_pairs_routes_items_to_key_buckets_and_counts_rows():
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    with TestPipeline() as p:
        items, _, counts = p | beam.Create(_docs()) | CreatePairs("train", params, 2, 7, 4)

        def check(element):
            bucket, (pairs, requests, donors) = element
            for block in (pairs, requests, donors):
                assert np.all(bucket_of(block.key, 4) == bucket)
            return len(pairs) + len(requests)

        per_bucket = items | beam.Map(lambda e: (e[0], check(e))) | "SumItems" >> beam.CombinePerKey(sum)
        summed = counts | "SumCounts" >> beam.CombinePerKey(sum)
        joined = ({"items": per_bucket, "counts": summed} | beam.CoGroupByKey()
                  | beam.Map(lambda kv: kv[1]["items"] == kv[1]["counts"]))
        assert_that(joined | beam.combiners.Count.Globally(), equal_to([4]), label="buckets")
        assert_that(joined | beam.Filter(lambda ok: not ok), equal_to([]), label="consistent")


def test_pairing_can_spill_blocks_to_files(tmp_path):
    from preprocess.pipeline import SpilledBlocks, _PairFn

    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    batch = _docs()[0]

    def items(spill_dir):
        fn = _PairFn("train", params, 2, 7, 4, spill_dir)
        return [e for e in fn.process(batch) if not isinstance(e, TaggedOutput)]

    inline, spilled = items(None), items(str(tmp_path / "spill"))
    assert [b for b, _ in inline] == [b for b, _ in spilled] == [0, 1, 2, 3]
    assert all(isinstance(ref, SpilledBlocks) for _, ref in spilled)
    assert len({ref.path for _, ref in spilled}) == 1  # one file per batch, a range per bucket
    for (_, blocks), (_, ref) in zip(inline, spilled):
        for a, b in zip(blocks, ref.load()):
            assert np.array_equal(a.key, b.key)
    assert np.array_equal(inline[1][1][0].a.values, spilled[1][1].load()[0].a.values)


def _row_spec(vocab_file, seq=32):
    spec = TokenizerSpec(vocab_file)
    info = vocab_info(build_tokenizer(spec), spec)
    return RowSpec(seq, info.cls_id, info.sep_id, info.unk_id, info.token_dtype.name, MaskingParams(0.15, 5),
                   info.mask_vocab())


def _rows_of(piece):
    """A piece of a shard: rows, or rows parked in a file for the shard's writer."""
    if isinstance(piece, pa.RecordBatch):
        return pa.Table.from_batches([piece])
    return pa.ipc.open_file(piece.path).read_all()


def test_mask_instances_resolves_random_next_and_balances_shards(vocab_file, tmp_path):
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    spec = _row_spec(vocab_file)
    with TestPipeline() as p:
        items, _, counts = p | beam.Create(_docs()) | CreatePairs("train", params, 2, 7, 3)
        rows, _ = items | MaskInstances(
            str(tmp_path), "train", spec, params.max_num_tokens, 3, counts | "SumCounts" >> beam.CombinePerKey(sum))
        tables = rows | beam.Map(lambda e: (e[0][0], _rows_of(e[1][1])))
        per_shard = tables | beam.Map(lambda e: (e[0], e[1].num_rows)) | "SumRows" >> beam.CombinePerKey(sum)

        def balanced(counts_):
            sizes = sorted(c for _, c in counts_)
            assert len(sizes) == 3 and sizes[-1] - sizes[0] <= 1, sizes
            return True

        assert_that(per_shard | beam.combiners.ToList() | beam.Map(balanced), equal_to([True]), label="balance")

        def negatives_ok(e):
            t = e[1]
            nsp = t.column("next_sentence_label").to_numpy()
            a, b = t.column("doc_id_a").to_numpy(), t.column("doc_id_b").to_numpy()
            return bool(np.all((a != b) == (nsp == 1)))

        assert_that(tables | beam.Map(negatives_ok) | beam.Filter(lambda ok: not ok), equal_to([]), label="nsp")
        parked = rows | beam.Filter(lambda e: not isinstance(e[1][1], pa.RecordBatch)) | beam.combiners.Count.Globally()
        assert_that(parked, equal_to([3]), label="parked")  # every bucket keeps most rows for its shard


def test_write_shards_writes_arrow_files_atomically(tmp_path, vocab_file):
    spec = _row_spec(vocab_file)
    from preprocess.packed import PairBlock, Ragged
    from preprocess.shards import build_rows

    ones = np.ones(6, dtype=np.uint64)
    pairs = PairBlock(np.arange(6, dtype=np.uint64), ones, ones, np.zeros(6, dtype=np.int8),
                      Ragged(np.tile(np.arange(5, 9), 6), np.arange(7) * 4),
                      Ragged(np.tile(np.arange(9, 14), 6), np.arange(7) * 5))
    batch, _ = build_rows(pairs, spec)
    elements = [((0, 2), (0, batch.slice(0, 3))), ((1, 2), (3, batch.slice(3, 3)))]
    with TestPipeline() as p:
        infos = p | beam.Create(elements) | WriteShards(str(tmp_path), "train", "uint16", {"seed": "1"})
        assert_that(infos | beam.Map(lambda s: (s.path, s.rows)), equal_to([
            ("train/shard-00000-of-00002.arrow", 3), ("train/shard-00001-of-00002.arrow", 3)]))
    files = sorted(f.name for f in (tmp_path / "train").iterdir())
    assert files == ["shard-00000-of-00002.arrow", "shard-00001-of-00002.arrow"]  # no temporaries left
    t = pa.ipc.open_file(str(tmp_path / "train" / files[1])).read_all()
    assert t.num_rows == 3 and t.schema.metadata[b"split"] == b"train"


def test_split_is_by_document_hash_and_near_the_fraction():
    ids = np.arange(20_000, dtype=np.uint64)
    val = in_validation(ids, 0.1)
    assert abs(int(val.sum()) - 2000) < 4 * np.sqrt(20_000 * 0.09)
    assert np.array_equal(in_validation(ids[:50], 0.1), val[:50])
    assert not in_validation(ids, 0.0).any()
