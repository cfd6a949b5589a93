"""Our tokenizers-based WordPiece gives the ids of Google's reference tokenizer."""

import pytest

from bench.reference_bert import ReferenceTokenizer
from preprocess.tokenization import (
    TokenizerSpec,
    VocabError,
    build_tokenizer,
    encode_sentences,
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


def test_ids_match_reference_on_real_text(tokenizers_pair, corpus_docs):
    ours, ref = tokenizers_pair
    lines = [line for doc in corpus_docs for line in doc]
    got = encode_sentences(ours, lines)
    mismatches = [(line, g.tolist(), ref.ids(ref.tokenize(line))) for line, g in zip(lines, got)
                  if g.tolist() != ref.ids(ref.tokenize(line))]
    assert len(lines) > 3000
    assert mismatches == []


@pytest.mark.parametrize("text", HARD)
def test_ids_match_reference_on_hard_cases(tokenizers_pair, text):
    ours, ref = tokenizers_pair
    assert encode_sentences(ours, [text])[0].tolist() == ref.ids(ref.tokenize(text))


def test_cased_vocab_keeps_case_and_accents(vocab_file):
    ours = build_tokenizer(TokenizerSpec(vocab_file, lower_case=False))
    ref = ReferenceTokenizer(vocab_file, do_lower_case=False)
    for text in HARD:
        assert encode_sentences(ours, [text])[0].tolist() == ref.ids(ref.tokenize(text))


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
    assert encode_sentences(again, [text])[0].tolist() == encode_sentences(tok, [text])[0].tolist()
