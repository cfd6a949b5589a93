"""Learn a WordPiece vocabulary from word counts, deterministically.

The algorithm is the one of ``tokenizers``' ``WordPieceTrainer`` (a BPE trainer whose
continuation pieces carry the ``##`` prefix), with every choice it leaves to a hash map's
order made by a stable rule instead:

1. the alphabet: every character of every word, counted by occurrences; with more than
   ``limit_alphabet`` of them, the most frequent are kept (ties: lower code point first),
   then sorted by code point;
2. words are split into characters, the first as is, the others as ``##c``; a character
   outside the alphabet is dropped; the ``##c`` pieces follow the alphabet, by code point;
3. merges: the adjacent pair with the highest count (occurrences weighted by word counts)
   is merged, ties going to the pair of lower ids (the library's rule, on ids that are now
   the same in every process), until the vocabulary has ``vocab_size`` entries or the best
   pair occurs fewer than ``min_frequency`` times. The merged piece is the first part followed
   by the second without its ``##``; a piece made twice keeps its first id.

Same word counts and options give the same list of pieces, in any process and on any machine.
Pure Python on the counts: its time grows with the distinct words, not with the corpus.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping, Sequence

Pair = tuple[int, int]


def alphabet_of(word_counts: Mapping[str, int], limit: int | None) -> list[str]:
    """The characters kept, by code point: the ``limit`` most frequent (ties: lower code point)."""
    chars: Counter = Counter()
    for word, n in word_counts.items():
        for c in word:
            chars[c] += n
    kept = sorted(chars, key=lambda c: (-chars[c], c))
    if limit is not None and len(kept) > limit:
        kept = kept[:limit]
    return sorted(kept)


class _Merger:
    """Words as lists of piece ids, pair counts, and which words hold each pair."""

    def __init__(self, words: list[list[int]], counts: list[int]):
        self.words, self.counts = words, counts
        self.pair_counts: Counter = Counter()
        self.where: dict[Pair, set[int]] = {}
        for i, (w, n) in enumerate(zip(words, counts)):
            for pair in zip(w, w[1:]):
                self.pair_counts[pair] += n
                self.where.setdefault(pair, set()).add(i)

    def merge(self, pair: Pair, new: int) -> set[Pair]:
        """Replace every non-overlapping occurrence of ``pair`` (left to right) by ``new``;
        return the pairs whose count grew. The order the words are visited in changes no count."""
        a, b = pair
        pair_counts, where = self.pair_counts, self.where
        grown: set[Pair] = set()
        for i in where.pop(pair, ()):
            w, n = self.words[i], self.counts[i]
            j = 0
            while True:
                try:
                    j = w.index(a, j)
                except ValueError:
                    break
                if j + 1 < len(w) and w[j + 1] == b:
                    w[j:j + 2] = (new,)
                    pair_counts[pair] -= n
                    if j > 0:
                        prev = w[j - 1]
                        pair_counts[(prev, a)] -= n
                        pair_counts[(prev, new)] += n
                        where.setdefault((prev, new), set()).add(i)
                        grown.add((prev, new))
                    if j + 1 < len(w):
                        nxt = w[j + 1]
                        pair_counts[(b, nxt)] -= n
                        pair_counts[(new, nxt)] += n
                        where.setdefault((new, nxt), set()).add(i)
                        grown.add((new, nxt))
                j += 1
        return grown


def learn_wordpiece(
    word_counts: Mapping[str, int],
    vocab_size: int,
    min_frequency: int = 2,
    limit_alphabet: int | None = 1000,
    special_tokens: Sequence[str] = (),
    prefix: str = "##",
) -> list[str]:
    """The vocabulary, in id order: special tokens, alphabet, ``##`` characters, then merges.

    ``word_counts``: each pre-tokenized, normalised word and its occurrences in the corpus.
    """
    pieces: list[str] = []
    ids: dict[str, int] = {}

    def add(piece: str) -> int:
        if piece not in ids:
            ids[piece] = len(pieces)
            pieces.append(piece)
        return ids[piece]

    for t in special_tokens:
        add(t)
    alphabet = alphabet_of(word_counts, limit_alphabet)
    for c in alphabet:
        add(c)
    allowed = set(alphabet)
    continuations = sorted({c for w in word_counts for c in w[1:] if c in allowed})
    for c in continuations:
        add(prefix + c)

    words, counts = [], []
    for word in sorted(word_counts):
        split = [ids[c if k == 0 else prefix + c] for k, c in enumerate(word) if c in allowed]
        if split:
            words.append(split)
            counts.append(word_counts[word])
    merger = _Merger(words, counts)
    heap = [(-n, pair) for pair, n in merger.pair_counts.items() if n > 0]
    heapq.heapify(heap)
    strip = len(prefix)
    while len(pieces) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        current = merger.pair_counts[pair]
        if current != -neg:
            # a stale entry: the pair's count fell (re-queued at its count) or grew (queued again then)
            if 0 < current < -neg:
                heapq.heappush(heap, (-current, pair))
            continue
        if current < max(1, min_frequency):
            break
        a, b = pieces[pair[0]], pieces[pair[1]]
        new = add(a + (b[strip:] if b.startswith(prefix) else b))
        for grown in merger.merge(pair, new):
            heapq.heappush(heap, (-merger.pair_counts[grown], grown))
    return pieces
