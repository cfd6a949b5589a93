"""Our tokenizers-based WordPiece gives the ids of Google's reference tokenizer."""

import numpy as np
import pytest

from bench.reference_bert import ReferenceTokenizer
from preprocess.tokenization import (
    SentenceEncoder,
    TokenizerSpec,
    VocabError,
    build_tokenizer,
    splits_at_spaces,
    vocab_info,
)

HARD = [
    "Héllo Wörld! Ça va? naïve café résumé",  # accents stripped when lower-casing
    "The U.S.A. costs $3.50 -- (approx.) 12% off; x^2 `code` ~home @user #tag",  # ASCII punctuation
    "中文字符和English混合。日本語のテキスト",  # CJK ideographs spaced, kana not
    "tab\tand\u00a0nbsp\u2003em space and\u200bzero width",  # whitespace and format chars
    "control\x07chars\x00and\ufffdreplacement",  # dropped
    "«quotes» „german“ ‘single’ — em dash … ellipsis",  # Unicode punctuation
    "a" * 150 + " short",  # between tokenizers' default 100 and the reference's 200
    "b" * 250,  # beyond 200: [UNK] in both
    "Ünïcödé ÅNGSTRÖM Ωmega ﬁ ligature",
]


@pytest.fixture(scope="module")
def tokenizers_pair(vocab_file):
    spec = TokenizerSpec(vocab_file, lower_case=True)
    return build_tokenizer(spec), ReferenceTokenizer(vocab_file, do_lower_case=True)


def encode_each(tok, texts):
    """Ids of each text as the pipeline computes them: memoised, in batches of 500."""
    encoder = SentenceEncoder(tok)
    out = []
    for i in range(0, len(texts), 500):
        ids, lengths = encoder.encode(texts[i : i + 500])
        out += np.split(ids, np.cumsum(lengths)[:-1])
    return out


def direct(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def test_ids_match_reference_on_real_text(tokenizers_pair, corpus_docs):
    ours, ref = tokenizers_pair
    lines = [line for doc in corpus_docs for line in doc]
    got = encode_each(ours, lines)
    mismatches = [(line, g.tolist(), ref.ids(ref.tokenize(line))) for line, g in zip(lines, got)
                  if g.tolist() != ref.ids(ref.tokenize(line))]
    assert len(lines) > 3000
    assert mismatches == []


@pytest.mark.parametrize("text", HARD)
def test_ids_match_reference_on_hard_cases(tokenizers_pair, text):
    ours, ref = tokenizers_pair
    assert encode_each(ours, [text])[0].tolist() == ref.ids(ref.tokenize(text))


def test_cased_vocab_keeps_case_and_accents(vocab_file):
    ours = build_tokenizer(TokenizerSpec(vocab_file, lower_case=False))
    ref = ReferenceTokenizer(vocab_file, do_lower_case=False)
    for text in HARD:
        assert encode_each(ours, [text])[0].tolist() == ref.ids(ref.tokenize(text))


def test_vocab_without_special_tokens_is_rejected(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("[UNK]\nthe\nof\n")
    with pytest.raises(VocabError, match=r"lacks BERT special tokens: \[PAD\], \[CLS\], \[SEP\], \[MASK\]"):
        build_tokenizer(TokenizerSpec(str(bad)))
    with pytest.raises(VocabError, match="cannot read vocabulary"):
        build_tokenizer(TokenizerSpec(str(tmp_path / "missing.txt")))


def test_fingerprint_tracks_vocab_and_casing(vocab_file, tmp_path):
    a = vocab_info(build_tokenizer(TokenizerSpec(vocab_file)), TokenizerSpec(vocab_file))
    cased = TokenizerSpec(vocab_file, lower_case=False)
    b = vocab_info(build_tokenizer(cased), cased)
    other = tmp_path / "vocab.txt"
    other.write_text(open(vocab_file).read() + "extra\n")
    c = vocab_info(build_tokenizer(TokenizerSpec(str(other))), TokenizerSpec(str(other)))
    assert len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3
    assert a.token_dtype.name == "uint16" and c.size == a.size + 1


def test_tokenizer_json_is_accepted(vocab_file, tmp_path):
    tok = build_tokenizer(TokenizerSpec(vocab_file))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    again = build_tokenizer(TokenizerSpec(str(path)))
    text = "Round trip through tokenizer.json keeps ids."
    assert direct(again, text) == direct(tok, text)


FUZZ_CHARS = list("aeiouxyzAEZ  ..,;:!?'\"()[]{}<>#$%&*+-/=@\\^_`|~019") + [
    "\t", "\n", "\r", "\x00", "\x07", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\u200b",
    "\ufffd", "\u0301", "\u0308", "é", "Å", "ﬁ", "İ", "Σ", "ς", "中", "文", "の", "«", "»", "—", "…", "\U0001f600", "\ue000",
]


@pytest.mark.parametrize("lower_case", [True, False])
def test_memoised_encoding_equals_encoding_each_text_whole(vocab_file, lower_case):
    tok = build_tokenizer(TokenizerSpec(vocab_file, lower_case=lower_case))
    assert splits_at_spaces(tok)
    r = np.random.default_rng(5)
    texts = ["".join(r.choice(FUZZ_CHARS, size=r.integers(1, 40))) for _ in range(3000)]
    texts += ["x" * 199 + "!", "y" * 201, "a.b" * 90, "  lead and trail  ", "[MASK] [CLS]x"]
    got = encode_each(tok, texts)
    assert [g.tolist() for g in got] == [direct(tok, t) for t in texts]


def test_memo_serves_repeats_and_is_bounded(vocab_file):
    tok = build_tokenizer(TokenizerSpec(vocab_file))
    texts = ["The value is returned.", "The value is kept, (not) returned!"]
    encoder = SentenceEncoder(tok)
    first = encoder.encode(texts)
    entries = len(encoder.chunks.index)
    assert entries == 7 and len(encoder.pieces.index) == 12  # "returned." -> "returned", ".", ""
    again = encoder.encode(texts[::-1] + texts)
    assert len(encoder.chunks.index) == entries  # nothing new was encoded
    assert again[0].tolist() == np.concatenate([first[0][first[1][0]:], first[0][:first[1][0]], first[0]]).tolist()
    small = SentenceEncoder(tok, max_entries=3)
    for _ in range(3):
        ids, lengths = small.encode(texts)
        assert ids.tolist() == first[0].tolist() and lengths.tolist() == first[1].tolist()
        assert len(small.chunks.index) <= 7
    # two generations: a word in use is carried into each new one, a word seen once is dropped
    memo = SentenceEncoder(tok, max_entries=20)
    calls = []
    encode_words = memo._encode_words
    memo._encode_words = lambda pieces: calls.append(len(pieces)) or encode_words(pieces)
    for k in range(50):
        sentence = f"the value {k}x{k}"
        ids, _ = memo.encode([sentence])
        assert ids.tolist() == direct(tok, sentence)
        for generation in (memo.chunks.current, memo.chunks.previous):
            assert len(generation.index) <= 20 + 3
    assert "the" in memo.chunks.index and "value" in memo.chunks.index  # encoded once, kept through 5 turns
    assert "0x0" not in memo.chunks.index and "0x0" not in memo.chunks.previous.index
    assert sum(calls) == 2 + 50  # "the" and "value" once; each new number once


def test_tokenizer_with_added_tokens_is_encoded_whole(vocab_file, tmp_path):
    tok = build_tokenizer(TokenizerSpec(vocab_file))
    tok.add_special_tokens(["[MASK]", "new token"])
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    loaded = build_tokenizer(TokenizerSpec(str(path)))
    assert not splits_at_spaces(loaded)
    texts = ["a new token here [MASK].", "plain text"]
    ids, lengths = SentenceEncoder(loaded).encode(texts)
    assert np.split(ids, np.cumsum(lengths)[:-1])[0].tolist() == direct(loaded, texts[0])
    assert ids.tolist() == direct(loaded, texts[0]) + direct(loaded, texts[1])
