"""The WordPiece learner: the library's algorithm, with ties broken the same way in every process."""

import random
from collections import Counter

import pytest

from preprocess.wordpiece import alphabet_of, learn_wordpiece


def learn_by_recounting(word_counts, vocab_size, min_frequency=2, limit_alphabet=1000, specials=(), prefix="##"):
    """The algorithm written the slow, obvious way: every pair recounted from scratch before each merge."""
    pieces = list(specials)
    alphabet = alphabet_of(word_counts, limit_alphabet)
    pieces += [c for c in alphabet if c not in pieces]
    allowed = set(alphabet)
    pieces += sorted({prefix + c for w in word_counts for c in w[1:] if c in allowed} - set(pieces))
    ids = {p: i for i, p in enumerate(pieces)}
    words = {w: [ids[c if k == 0 else prefix + c] for k, c in enumerate(w) if c in allowed] for w in word_counts}
    while len(pieces) < vocab_size:
        pairs: Counter = Counter()
        for w, split in words.items():
            for p in zip(split, split[1:]):
                pairs[p] += word_counts[w]
        if not pairs:
            break
        pair = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[pair] < max(1, min_frequency):
            break
        a, b = pieces[pair[0]], pieces[pair[1]]
        merged = a + (b[len(prefix):] if b.startswith(prefix) else b)
        if merged not in ids:
            ids[merged] = len(pieces)
            pieces.append(merged)
        for w, split in words.items():
            out, j = [], 0
            while j < len(split):
                if j + 1 < len(split) and (split[j], split[j + 1]) == pair:
                    out.append(ids[merged])
                    j += 2
                else:
                    out.append(split[j])
                    j += 1
            words[w] = out
    return pieces


@pytest.mark.parametrize("seed", range(40))
def test_incremental_counts_give_the_vocabulary_of_recounting_every_pair(seed):
    r = random.Random(seed)
    # few letters, long words, repeats (aaa: overlapping pairs), a piece reachable by two merges
    words = {"".join(r.choice("aaabbcdé!") for _ in range(r.randint(1, 12))): r.randint(1, 9)
             for _ in range(r.randint(1, 80))}
    size, min_frequency, limit = r.randint(3, 150), r.randint(0, 3), r.choice([None, 3, 1000])
    assert learn_wordpiece(words, size, min_frequency, limit) == \
        learn_by_recounting(words, size, min_frequency, limit)


def test_layout_and_a_worked_example():
    words = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
    vocab = learn_wordpiece(words, 20, min_frequency=2, special_tokens=("[PAD]", "[UNK]"))
    assert vocab[:13] == ["[PAD]", "[UNK]", "b", "g", "h", "n", "p", "s", "u", "##g", "##n", "##s", "##u"]
    # ##u ##g 20, ##u ##n 16, h ##ug 15, p ##un 12; then three pairs of 5: p ##ug has the lowest ids,
    # hug ##s next; b ##un (4) fills the 20th entry
    assert vocab[13:] == ["##ug", "##un", "hug", "pun", "pug", "hugs", "bun"]


def test_the_same_counts_in_any_order_give_the_same_vocabulary():
    r = random.Random(0)
    words = {"".join(r.choice("abcdefgh") for _ in range(r.randint(1, 9))): r.randint(1, 4) for _ in range(400)}
    items = list(words.items())
    r.shuffle(items)
    # every pair count ties with many others: the rule, not an order, decides
    assert learn_wordpiece(dict(items), 300) == learn_wordpiece(words, 300)


def test_alphabet_keeps_the_most_frequent_characters_ties_by_code_point():
    words = {"ab": 3, "c": 3, "d": 1, "e": 1}
    assert alphabet_of(words, None) == ["a", "b", "c", "d", "e"]
    assert alphabet_of(words, 4) == ["a", "b", "c", "d"]  # d and e tie: d, the lower code point
    # characters outside the alphabet are dropped from words; the next one is a continuation
    # as the library does: the second character of a word stays a continuation when the first is dropped
    assert learn_wordpiece({"xa": 5, "a": 1}, 10, limit_alphabet=1) == ["a", "##a"]
    vocab = learn_wordpiece({"xab": 5, "ab": 2}, 10, limit_alphabet=2, min_frequency=1)
    assert "x" not in vocab and "##b" in vocab


def test_stops_below_min_frequency_and_at_vocab_size():
    words = {"ab": 3, "cd": 1}
    assert "ab" in learn_wordpiece(words, 10, min_frequency=3)
    assert "cd" not in learn_wordpiece(words, 10, min_frequency=2)
    assert learn_wordpiece(words, 10, min_frequency=0)[-2:] == ["ab", "cd"]
    assert len(learn_wordpiece(words, 6, min_frequency=0)) == 6  # 4 characters, 2 ## pieces: no merge
