"""Stage 2: tokenizing documents into packed batches, and the validation split."""


import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocess.stages.tokenize import TokenizeDocuments, in_validation, tokenize_batch
from preprocess.tokenization import SentenceEncoder, TokenizerSpec, build_tokenizer


def test_tokenize_batches_cuts_long_sentences_and_drops_empty_documents(vocab_file):
    spec = TokenizerSpec(vocab_file)
    tok = build_tokenizer(spec)
    long_sentence = " ".join(["value"] * 40)
    with TestPipeline() as p:
        out = (
            p
            | beam.Create([[(1, ["Return the value.", long_sentence]), (2, ["\x07\x08"])]])
            | TokenizeDocuments(spec, max_sentence_tokens=16)
        )
        docs = out["train"] | beam.FlatMap(
            lambda b: [(int(d), b.take([i]).lengths.tolist(), int(b.sizes[i])) for i, d in enumerate(b.doc_id)])
        first = len(tok.encode("Return the value.", add_special_tokens=False).ids)
        assert_that(docs, equal_to([(1, [first, 16, 16, 8], first + 40)]), label="docs")
        counts = out["stats"] | beam.Map(lambda kv: kv[1]) | beam.FlatMap(dict.items) | beam.CombinePerKey(sum)
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
        out = p | beam.Create([[(i, [f"Sentence number {i}."]) for i in ids[k:k + 50]] for k in range(0, 200, 50)]) | TokenizeDocuments(
            spec, max_sentence_tokens=16, validation_fraction=0.2)
        for split, want in (("train", ~expected), ("validation", expected)):
            got = out[split] | f"Ids[{split}]" >> beam.FlatMap(lambda b: b.doc_id.tolist())
            assert_that(got, equal_to([i for i in ids if want[i]]), label=split)


def test_split_is_by_document_hash_and_near_the_fraction():
    ids = np.arange(20_000, dtype=np.uint64)
    val = in_validation(ids, 0.1)
    assert abs(int(val.sum()) - 2000) < 4 * np.sqrt(20_000 * 0.09)
    assert np.array_equal(in_validation(ids[:50], 0.1), val[:50])
    assert not in_validation(ids, 0.0).any()


def test_tokenize_batch_packs_documents_with_their_sentence_lengths(vocab_file):
    tok = build_tokenizer(TokenizerSpec(vocab_file))
    encoder = SentenceEncoder(tok)
    batch, stats = tokenize_batch(encoder, [(7, ["Return the value.", "Raise an error."]), (9, ["\x07"])], 64,
                                  np.dtype(np.uint16))
    assert batch.doc_id.tolist() == [7] and stats["document_no_tokens"] == 1
    expected = [tok.encode(s, add_special_tokens=False).ids for s in ("Return the value.", "Raise an error.")]
    assert batch.lengths.tolist() == [len(e) for e in expected]
    assert batch.tokens.tolist() == expected[0] + expected[1] and batch.tokens.dtype == np.uint16


def test_the_tokenizer_goes_with_the_bundle_not_with_the_dofn(vocab_file):
    """Beam's Dask runner tears a DoFn down after each partition, but its worker keeps the DoFn."""
    from preprocess.stages.tokenize import _TokenizeFn
    from preprocess.tokenization import TokenizerSpec

    fn = _TokenizeFn(TokenizerSpec(vocab_file), 64, "uint16")
    fn.setup()
    assert fn.encoder is not None
    fn.teardown()
    assert fn.encoder is None


def test_a_thread_keeps_its_encoder_and_memos_from_one_dofn_to_the_next(vocab_file, tmp_path):
    """Beam's Dask runner sets a DoFn up per partition: the next one finds the last one's memos."""
    import shutil
    import threading

    from preprocess.stages.tokenize import _TokenizeFn, thread_encoder
    from preprocess.tokenization import TokenizerSpec

    vocab = tmp_path / "vocab.txt"
    shutil.copy(vocab_file, vocab)
    spec = TokenizerSpec(str(vocab))
    first = _TokenizeFn(spec, 64, "uint16")
    first.setup()
    first.encoder.encode(["Return the value of the attribute."])
    assert len(first.encoder.chunks.index) > 0
    encoder = first.encoder
    first.teardown()
    second = _TokenizeFn(spec, 64, "uint16")
    second.setup()
    assert second.encoder is encoder and len(second.encoder.chunks.index) > 0  # memos kept
    other: list = []
    thread = threading.Thread(target=lambda: other.append(thread_encoder(spec)))
    thread.start()
    thread.join()
    assert other[0] is not encoder  # an encoder is never shared between threads
    vocab.write_text(vocab.read_text() + "zzzextra\n")  # the vocabulary changed since: a new encoder
    assert thread_encoder(spec) is not encoder
    assert thread_encoder(spec).tok.get_vocab_size() == encoder.tok.get_vocab_size() + 1
