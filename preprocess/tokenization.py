"""WordPiece tokenization with the ``tokenizers`` library, set up to match Google's BERT.

A ``vocab.txt`` is turned into the pipeline Google's ``FullTokenizer`` runs: BERT's
normaliser (drop NUL, U+FFFD and control characters, whitespace to space, spaces
around CJK ideographs, and when lower-casing: lower-case, NFD, strip combining
marks), split on whitespace and punctuation, greedy longest-match WordPiece with
``##`` continuations. ``max_input_chars_per_word`` is set to the reference's 200
(``tokenizers`` defaults to 100). A ``tokenizer.json`` is used as it is.

Known differences from the reference are listed in the README ("Tokenization").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from preprocess.masking import MaskVocab
from preprocess.packed import gather_ranges, group_sums

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_INPUT_CHARS_PER_WORD = 200  # Google's WordpieceTokenizer default


class VocabError(ValueError):
    """The vocabulary file is missing, unreadable or lacks BERT's special tokens."""


@dataclass(frozen=True)
class TokenizerSpec:
    """Where the vocabulary comes from; picklable, so workers rebuild the tokenizer."""

    path: str
    lower_case: bool = True

    @property
    def is_json(self) -> bool:
        return self.path.endswith(".json")


def read_vocab_text(path: str) -> list[str]:
    """Tokens of a ``vocab.txt``, one per line, in id order (Beam filesystems paths)."""
    try:
        raw = read_bytes(path)
    except Exception as e:  # noqa: BLE001 - any filesystem error is reported the same way
        raise VocabError(f"cannot read vocabulary {path}: {e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VocabError(f"vocabulary {path} is not UTF-8 (byte {e.start})") from e
    return vocab_lines(text)


def read_bytes(path: str) -> bytes:
    """A file's bytes through Beam's filesystems (gs://, s3://, ...); plain ``open`` for a local
    path where Beam is not installed (a training node needs no Beam)."""
    try:
        from apache_beam.io.filesystems import FileSystems
    except ImportError:
        with open(path, "rb") as f:
            return f.read()
    with FileSystems.open(path) as f:
        return f.read()


def vocab_lines(text: str) -> list[str]:
    """Tokens of a ``vocab.txt``'s text, one per line, in id order (blank lines keep their id)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last line starts no token
    return [line.strip() for line in lines]


def bert_normalizer(lower_case: bool) -> normalizers.Normalizer:
    """BERT's normalisation: control characters dropped, CJK characters spaced, lower-cased and
    accent-stripped unless cased."""
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                      lowercase=lower_case)


def wordpiece_tokenizer(vocab: dict[str, int], lower_case: bool) -> Tokenizer:
    """BERT's tokenizer over ``vocab`` (token -> id): normalised, split at spaces and punctuation, WordPiece."""
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    tok.normalizer = bert_normalizer(lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def build_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """The ``tokenizers`` pipeline for ``spec``; raises :class:`VocabError` on bad input."""
    if spec.is_json:
        try:
            tok = Tokenizer.from_str(read_bytes(spec.path).decode("utf-8"))
        except Exception as e:  # noqa: BLE001
            raise VocabError(f"cannot load tokenizer {spec.path}: {e}") from e
    else:
        tokens = read_vocab_text(spec.path)
        vocab: dict[str, int] = {}
        for i, t in enumerate(tokens):
            vocab[t] = i  # on a duplicate line the later id wins, as in the reference
        if "[UNK]" not in vocab:
            raise VocabError(f"vocabulary {spec.path} has no [UNK] token")
        tok = wordpiece_tokenizer(vocab, spec.lower_case)
    vocab = tok.get_vocab(with_added_tokens=True)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise VocabError(f"vocabulary {spec.path} lacks BERT special tokens: {', '.join(missing)}")
    return tok


@dataclass(frozen=True)
class VocabInfo:
    size: int
    fingerprint: str  # sha256 over the id-ordered tokens and the normaliser settings
    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    unk_id: int
    tokens: tuple[str, ...]

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.size <= 65536 else np.dtype(np.int32)

    def mask_vocab(self) -> MaskVocab:
        return mask_vocab_of(self.tokens)


def mask_vocab_of(tokens: list[str] | tuple[str, ...]) -> MaskVocab:
    """What masking needs from a vocabulary (id order): [MASK], the ordinary tokens a random
    replacement draws from (no [PAD]/[CLS]/[unused*] ...), the ``##`` continuation pieces."""
    random_ids = np.array([i for i, t in enumerate(tokens) if not (t.startswith("[") and t.endswith("]"))],
                          dtype=np.int64)
    is_cont = np.array([t.startswith("##") for t in tokens], dtype=bool)
    return MaskVocab(mask_id=list(tokens).index("[MASK]"), random_ids=random_ids, is_continuation=is_cont)


def vocab_info(tok: Tokenizer, spec: TokenizerSpec) -> VocabInfo:
    vocab = tok.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1
    tokens = [""] * size
    for t, i in vocab.items():
        tokens[i] = t
    h = hashlib.sha256()
    h.update(json.dumps(tokens, ensure_ascii=False).encode("utf-8"))
    h.update(tok.normalizer.__getstate__() if tok.normalizer is not None else b"")
    return VocabInfo(
        size=size,
        fingerprint=h.hexdigest()[:32],
        cls_id=vocab["[CLS]"],
        sep_id=vocab["[SEP]"],
        mask_id=vocab["[MASK]"],
        pad_id=vocab["[PAD]"],
        unk_id=vocab["[UNK]"],
        tokens=tuple(tokens),
    )


def splits_at_spaces(tok: Tokenizer) -> bool:
    """Whether no token can span a space or an ASCII punctuation mark.

    True for BERT's pipeline: BERT's normaliser works character by character and never
    joins across whitespace or punctuation, then the text is split on whitespace and
    around every punctuation mark, then WordPiece runs inside each piece. So a text's
    ids are those of its space-separated chunks back to back, and a chunk's are those
    of its pieces between (and including) ASCII punctuation marks. Added tokens could
    match across those places, so a tokenizer with any is not split.
    """
    if not isinstance(tok.model, models.WordPiece):
        return False
    if not isinstance(tok.pre_tokenizer, pre_tokenizers.BertPreTokenizer):
        return False
    if tok.normalizer is not None and not isinstance(tok.normalizer, normalizers.BertNormalizer):
        return False
    return not tok.get_added_tokens_decoder()


ASCII_PUNCTUATION = r"([!-/:-@\[-`{-~])"  # BERT splits around each of these


class _Table:
    """Texts already encoded: text -> entry; entry e's ids are ``ids[starts[e]:starts[e] + lengths[e]]``."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.starts = np.zeros(0, dtype=np.int64)
        self.lengths = np.zeros(0, dtype=np.int64)
        self.ids = np.zeros(0, dtype=np.int32)

    def add(self, texts: list[str], ids: np.ndarray, lengths: np.ndarray) -> None:
        first = len(self.lengths)
        self.starts = np.concatenate([self.starts, len(self.ids) + np.cumsum(lengths) - lengths])
        self.lengths = np.concatenate([self.lengths, lengths])
        self.ids = np.concatenate([self.ids, ids])
        self.index.update(zip(texts, range(first, first + len(texts))))

    def entries(self, texts: list[str]) -> np.ndarray:
        """Each text's entry, -1 where it has none."""
        return np.fromiter(map(self.index.get, texts, repeat(-1)), dtype=np.int64, count=len(texts))

    def gather(self, entry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids of the entries back to back, each entry's token count)."""
        lengths = self.lengths[entry]
        return gather_ranges(self.ids, self.starts[entry], lengths), lengths


class _Memo:
    """Texts already encoded, in two generations of at most about ``max_entries`` each.

    When the current generation is full it becomes the previous one, and the one before is
    dropped; a text found only in the previous generation is copied into the current one. So
    the texts in use (a language's common words) stay through every turn, while one seen once
    (a number, a name) is forgotten two turns later, and the memory stays bounded.
    """

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self.current, self.previous = _Table(), _Table()

    @property
    def index(self) -> dict[str, int]:
        return self.current.index

    def turn_if_full(self) -> None:
        if len(self.current.index) >= self.max_entries:
            self.current, self.previous = _Table(), self.current


def _memoised(memo: _Memo, texts: pa.Array, encode) -> tuple[np.ndarray, np.ndarray]:
    """The ids of ``texts`` from ``memo``; those it does not hold are ``encode``-d (Arrow strings ->
    ids, lengths) and added.

    Arrow finds the batch's distinct texts (in C++); only those are looked up in Python.
    """
    coded = texts.dictionary_encode()
    distinct = coded.dictionary.to_pylist()
    entry = memo.current.entries(distinct)
    absent = np.flatnonzero(entry < 0)
    if len(absent):
        new = [distinct[i] for i in absent.tolist()]
        held = memo.previous.entries(new)
        kept, missing = np.flatnonzero(held >= 0), np.flatnonzero(held < 0)
        if len(kept):
            memo.current.add([new[i] for i in kept.tolist()], *memo.previous.gather(held[kept]))
        if len(missing):
            memo.current.add([new[i] for i in missing.tolist()],
                             *encode(coded.dictionary.take(pa.array(absent[missing]))))
        entry[absent] = memo.current.entries(new)
    return memo.current.gather(entry[coded.indices.to_numpy(zero_copy_only=False)])


def _split(texts: pa.Array, separator: str) -> tuple[pa.Array, np.ndarray]:
    """All parts of all texts split at ``separator``, back to back; each text's part count."""
    parts = pc.split_pattern(texts, pattern=separator)
    return pc.list_flatten(parts), pc.list_value_length(parts).to_numpy(zero_copy_only=False).astype(np.int64)


class SentenceEncoder:
    """Token ids of batches of sentences, with ``tokenizers`` doing all tokenization.

    When :func:`splits_at_spaces` holds, each distinct space-separated chunk is looked up
    in a memo; a chunk not seen before is cut into pieces at ASCII punctuation, and only
    pieces not seen before go through ``encode_batch`` (as pre-tokenized sequences of a
    few hundred pieces, far cheaper per piece than one input each). Real text repeats
    its words, so most of a batch is gathered from memory. The ids are exactly those
    of encoding each sentence whole; only the work differs. Each memo keeps two
    generations of ``max_entries`` (:class:`_Memo`): its memory is bounded, and the words in
    use stay. Otherwise sentences go to ``encode_batch`` as they are.
    """

    GROUP = 256  # pieces per pre-tokenized input

    def __init__(self, tok: Tokenizer, max_entries: int = 1 << 16):
        self.tok = tok
        self.memoised = splits_at_spaces(tok)
        self.chunks = _Memo(max_entries)
        self.pieces = _Memo(max_entries)

    def encode(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids of all sentences back to back as int32, each sentence's token count)."""
        if not sentences:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
        if not self.memoised:
            encodings = self.tok.encode_batch_fast(sentences, add_special_tokens=False)
            lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
            ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(lengths.sum()))
            return ids, lengths
        self.chunks.turn_if_full()
        self.pieces.turn_if_full()
        chunks, per_sentence = _split(pa.array(sentences, type=pa.string()), " ")
        ids, lengths = _memoised(self.chunks, chunks, self._encode_chunks)
        return ids, group_sums(lengths, per_sentence)

    def _encode_chunks(self, chunks: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        spaced = pc.replace_substring_regex(chunks, pattern=ASCII_PUNCTUATION, replacement=r" \1 ")
        pieces, per_chunk = _split(spaced, " ")
        ids, lengths = _memoised(self.pieces, pieces, self._encode_words)
        return ids, group_sums(lengths, per_chunk)

    def _encode_words(self, pieces: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        words = pieces.to_pylist()
        groups = [words[i : i + self.GROUP] for i in range(0, len(words), self.GROUP)]
        encodings = self.tok.encode_batch(groups, is_pretokenized=True, add_special_tokens=False)  # _fast: no word ids
        lengths = np.concatenate([
            np.bincount(np.asarray(e.word_ids, dtype=np.int64), minlength=len(g)) for g, e in zip(groups, encodings)
        ])
        ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(lengths.sum()))
        return ids, lengths


def vocab_file_fingerprint(path: str, lower_case: bool = True) -> str:
    """The fingerprint a dataset made with this vocabulary file records (see :func:`vocab_info`)."""
    spec = TokenizerSpec(path, lower_case)
    return vocab_info(build_tokenizer(spec), spec).fingerprint


def save_vocab_copy(spec: TokenizerSpec, out_dir: str) -> str:
    """Copy the vocabulary beside the shards so the dataset is self-contained."""
    from apache_beam.io.filesystems import FileSystems

    name = "tokenizer.json" if spec.is_json else "vocab.txt"
    dest = FileSystems.join(out_dir, name)
    with FileSystems.open(spec.path) as src:
        data = src.read()
    with FileSystems.create(dest) as f:
        f.write(data)
    return name
