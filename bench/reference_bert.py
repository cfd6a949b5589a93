"""A faithful single-process re-implementation of Google's BERT data generator.

Written from the behaviour of google-research/bert ``tokenization.py`` and
``create_pretraining_data.py`` (see ../shared/REFERENCE-NOTES.md), without
TensorFlow. It is the yardstick for the benchmark (its speed) and for the tests (its
token ids and its NSP bias). It keeps the reference's quirks on purpose: one random
stream for the whole run, everything in memory, single-sentence chunks always a
random next, the random document possibly the current one.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass

CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


class ReferenceTokenizer:
    """BasicTokenizer + WordpieceTokenizer, as the reference's FullTokenizer."""

    def __init__(self, vocab_file: str, do_lower_case: bool = True, max_chars_per_word: int = 200):
        self.vocab: dict[str, int] = {}
        with open(vocab_file, encoding="utf-8", errors="ignore") as f:
            for index, line in enumerate(f):
                self.vocab[line.strip()] = index
        self.inv_vocab = {v: k for k, v in self.vocab.items()}
        self.lower = do_lower_case
        self.max_chars = max_chars_per_word

    def basic(self, text: str) -> list[str]:
        cleaned = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                cleaned.append(" ")
            elif _is_cjk(cp):
                cleaned.append(f" {ch} ")
            else:
                cleaned.append(ch)
        words = []
        for word in "".join(cleaned).split():
            if self.lower:
                word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
            current: list[str] = []
            for ch in word:
                if _is_punctuation(ch):
                    if current:
                        words.append("".join(current))
                        current = []
                    words.append(ch)
                else:
                    current.append(ch)
            if current:
                words.append("".join(current))
        return [w for w in " ".join(words).split()]

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = piece
                    break
                end -= 1
            if found is None:
                return ["[UNK]"]
            pieces.append(found)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        return [p for w in self.basic(text) for p in self.wordpiece(w)]

    def ids(self, tokens: list[str]) -> list[int]:
        return [self.vocab.get(t, self.vocab["[UNK]"]) for t in tokens]


@dataclass
class Instance:
    tokens: list[str]
    segment_ids: list[int]
    is_random_next: bool
    masked_lm_positions: list[int]
    masked_lm_labels: list[str]


def read_documents(paths: list[str], tokenizer: ReferenceTokenizer) -> list[list[list[str]]]:
    docs: list[list[list[str]]] = [[]]
    for path in paths:
        with open(path, encoding="utf-8", errors="ignore") as f:
            for line in f:
                line = line.strip()
                if not line:
                    docs.append([])
                    continue
                tokens = tokenizer.tokenize(line)
                if tokens:
                    docs[-1].append(tokens)
    return [d for d in docs if d]


def truncate(a: list[str], b: list[str], max_num_tokens: int, rng: random.Random) -> None:
    while len(a) + len(b) > max_num_tokens:
        longer = a if len(a) >= len(b) else b  # max() returns the first of equals: A
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def mask(tokens, masked_lm_prob, max_predictions, vocab_words, rng):
    candidates = [i for i, t in enumerate(tokens) if t not in ("[CLS]", "[SEP]")]
    rng.shuffle(candidates)
    out = list(tokens)
    n = min(max_predictions, max(1, int(round(len(tokens) * masked_lm_prob))))
    chosen = []
    for i in candidates:
        if len(chosen) >= n:
            break
        if rng.random() < 0.8:
            out[i] = "[MASK]"
        elif rng.random() < 0.5:
            out[i] = tokens[i]
        else:
            out[i] = vocab_words[rng.randint(0, len(vocab_words) - 1)]
        chosen.append((i, tokens[i]))
    chosen.sort()
    return out, [i for i, _ in chosen], [t for _, t in chosen]


def instances_from_document(docs, index, max_seq_length, short_seq_prob, masked_lm_prob,
                            max_predictions, vocab_words, rng) -> list[Instance]:
    doc = docs[index]
    max_num_tokens = max_seq_length - 3
    target = max_num_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    out: list[Instance] = []
    chunk: list[list[str]] = []
    length = 0
    i = 0
    while i < len(doc):
        chunk.append(doc[i])
        length += len(doc[i])
        if i == len(doc) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = [t for s in chunk[:a_end] for t in s]
            b: list[str] = []
            if len(chunk) == 1 or rng.random() < 0.5:
                is_random = True
                for _ in range(10):
                    other = rng.randint(0, len(docs) - 1)
                    if other != index:
                        break
                other_doc = docs[other]
                for s in other_doc[rng.randint(0, len(other_doc) - 1):]:
                    b.extend(s)
                    if len(b) >= target - len(a):
                        break
                i -= len(chunk) - a_end
            else:
                is_random = False
                b = [t for s in chunk[a_end:] for t in s]
            truncate(a, b, max_num_tokens, rng)
            tokens = ["[CLS]", *a, "[SEP]", *b, "[SEP]"]
            segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
            masked, positions, labels = mask(tokens, masked_lm_prob, max_predictions, vocab_words, rng)
            out.append(Instance(masked, segments, is_random, positions, labels))
            chunk, length = [], 0
        i += 1
    return out


def create_instances(paths, tokenizer, max_seq_length=128, dupe_factor=5, short_seq_prob=0.1,
                     masked_lm_prob=0.15, max_predictions=20, seed=12345) -> list[Instance]:
    rng = random.Random(seed)
    docs = read_documents(paths, tokenizer)
    rng.shuffle(docs)
    vocab_words = list(tokenizer.vocab)
    instances = []
    for _ in range(dupe_factor):
        for index in range(len(docs)):
            instances.extend(instances_from_document(
                docs, index, max_seq_length, short_seq_prob, masked_lm_prob, max_predictions, vocab_words, rng))
    rng.shuffle(instances)
    return instances
