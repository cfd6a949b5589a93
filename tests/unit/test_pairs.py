import random

import numpy as np
import pytest

from preprocess.pairs import (
    Donor,
    PairingParams,
    RandomNextRequest,
    front_counts,
    pair_document,
    resolve_random_next,
    truncate_pairs,
    truncation_counts,
)


def sents(*lengths, start=0):
    out, t = [], start
    for n in lengths:
        out.append(np.arange(t, t + n, dtype=np.int32))
        t += n
    return out


def reference_truncation(la, lb, max_tokens):
    removed_a = removed_b = 0
    while la + lb > max_tokens:
        if la >= lb:  # max(tokens_a, tokens_b, key=len) returns A on ties
            la -= 1
            removed_a += 1
        else:
            lb -= 1
            removed_b += 1
    return removed_a, removed_b


def test_truncation_counts_equal_the_reference_loop_exhaustively():
    la, lb = np.meshgrid(np.arange(1, 60), np.arange(1, 60))
    la, lb = la.ravel(), lb.ravel()
    for m in (2, 5, 17, 40, 125):
        a, b = truncation_counts(la, lb, m)
        expected = np.array([reference_truncation(x, y, m) for x, y in zip(la, lb)])
        assert np.array_equal(a, expected[:, 0]) and np.array_equal(b, expected[:, 1])


def test_front_counts_are_binomial_half():
    keys = np.arange(20_000, dtype=np.uint64) * np.uint64(7919)
    removed = np.full(20_000, 100)
    fronts = front_counts(keys, 0, removed)
    assert fronts.min() >= 0 and fronts.max() <= 100
    assert abs(fronts.mean() - 50) < 0.2  # sd of the mean: 5 / sqrt(20000) = 0.035
    assert abs(fronts.std() - 5) < 0.2
    assert np.array_equal(fronts, front_counts(keys, 0, removed))  # keyed, so repeatable


def test_truncate_pairs_keeps_a_contiguous_window_of_each_side():
    pairs, _ = pair_pairs_from([40, 40, 40, 40, 40], max_seq_length=50, seed=3)
    out, removed = truncate_pairs(pairs, 47)
    for before, after in zip(pairs, out):
        assert len(after.tokens_a) + len(after.tokens_b) <= 47
        for full, window in ((before.tokens_a, after.tokens_a), (before.tokens_b, after.tokens_b)):
            assert len(window) >= 1
            start = int(np.flatnonzero(full == window[0])[0])
            assert np.array_equal(full[start : start + len(window)], window)
    assert removed == sum(len(p.tokens_a) + len(p.tokens_b) for p in pairs) - sum(
        len(p.tokens_a) + len(p.tokens_b) for p in out)


def pair_pairs_from(lengths, max_seq_length, seed, passes=1):
    params = PairingParams(max_seq_length=max_seq_length, short_seq_prob=0.0)
    pairs = []
    for p in range(passes):
        made = pair_document(1, sents(*lengths), p, seed, params)
        pairs += made.pairs
    return pairs, params


@pytest.mark.parametrize("seed", range(30))
def test_golden_three_sentence_document(seed):
    """[1,2,3] [4,5,6] [7,8,9], room for 6 tokens: each chunk is two sentences (or the last one)."""
    doc = sents(3, 3, 3)
    made = pair_document(7, doc, 0, seed, PairingParams(max_seq_length=9, short_seq_prob=0.0))
    allowed_next = {((0, 1, 2), (3, 4, 5)), ((3, 4, 5), (6, 7, 8))}
    for p in made.pairs:
        a, b = tuple(p.tokens_a.tolist()), tuple(p.tokens_b.tolist())
        # IsNext: two consecutive sentences, or the last sentence split inside itself
        assert (a, b) in allowed_next or (a + b == (6, 7, 8) and a and b)
        assert not p.is_random_next and p.doc_id_a == p.doc_id_b == 7
    for q in made.requests:
        assert tuple(q.tokens_a.tolist()) in {(0, 1, 2), (3, 4, 5), (6, 7, 8)}
        assert q.target_b_length == 6 - len(q.tokens_a)
    # A random next puts the unused sentence back, so the walk covers all sentences as A or B.
    covered = set()
    for p in made.pairs:
        covered |= set(p.tokens_a.tolist()) | set(p.tokens_b.tolist())
    for q in made.requests:
        covered |= set(q.tokens_a.tolist())
    assert covered == set(range(9))
    assert len(made.donors) == len(made.requests)


def test_label_is_a_fair_coin_even_for_single_sentence_documents():
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    n_next = n_random = 0
    for doc_id in range(4000):
        made = pair_document(doc_id, sents(12), 0, 99, params)  # one sentence: reference says always random
        n_next += len(made.pairs)
        n_random += len(made.requests)
        for p in made.pairs:
            assert np.array_equal(np.concatenate([p.tokens_a, p.tokens_b]), np.arange(12))
    assert n_next + n_random == 4000
    assert abs(n_random - 2000) < 4 * np.sqrt(4000 * 0.25)


def test_one_token_document_cannot_be_isnext_and_is_counted():
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    unpairable = sum(pair_document(d, sents(1), 0, 5, params).unpairable for d in range(200))
    assert 60 < unpairable < 140


def test_pairing_is_deterministic_and_pass_dependent():
    params = PairingParams(max_seq_length=40, short_seq_prob=0.1)
    doc = sents(*([7] * 30))
    a = pair_document(3, doc, 0, 1, params)
    b = pair_document(3, doc, 0, 1, params)
    c = pair_document(3, doc, 1, 1, params)
    key = lambda m: [(p.key, p.tokens_a.tolist(), p.tokens_b.tolist()) for p in m.pairs]  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)


def test_resolve_never_uses_the_requesting_document():
    rnd = random.Random(0)
    requests = [RandomNextRequest(rnd.getrandbits(64), rnd.randrange(3), np.arange(5), 10) for _ in range(500)]
    donors = [Donor(rnd.getrandbits(64), rnd.randrange(3), tuple(sents(4, 4, 4))) for _ in range(500)]
    pairs, unresolved = resolve_random_next(requests, donors)
    assert unresolved == 0 and len(pairs) == 500
    for p in pairs:
        assert p.doc_id_a != p.doc_id_b and p.is_random_next
        assert len(p.tokens_b) == 12  # whole sentences until the target (10) is reached
    # every other-document donor gets drawn: the draw is spread, not stuck on one
    assert len({p.doc_id_b for p in pairs}) == 3


def test_resolve_counts_requests_with_only_their_own_document_available():
    requests = [RandomNextRequest(k, 1, np.arange(3), 4) for k in range(5)]
    donors = [Donor(k, 1, tuple(sents(4))) for k in range(5)]
    pairs, unresolved = resolve_random_next(requests, donors)
    assert pairs == [] and unresolved == 5


def test_resolve_is_independent_of_input_order():
    rnd = random.Random(1)
    requests = [RandomNextRequest(rnd.getrandbits(64), rnd.randrange(9), np.arange(5), 6) for _ in range(100)]
    donors = [Donor(rnd.getrandbits(64), rnd.randrange(9), tuple(sents(3, 3, 3))) for _ in range(100)]
    a, _ = resolve_random_next(requests, donors)
    b, _ = resolve_random_next(requests[::-1], donors[::-1])
    assert [(p.key, p.doc_id_b) for p in a] == [(p.key, p.doc_id_b) for p in b]
