import random

import numpy as np
import pytest

from preprocess.packed import DocumentBatch, DonorBlock, PairBlock, Ragged, RequestBlock
from preprocess.pairs import (
    DocumentPlan,
    PairingParams,
    front_counts,
    plan_blocks,
    plan_document,
    resolve_random_next,
    truncate_pairs,
    truncation_counts,
)


def doc_of(*lengths, start=0):
    """A document whose tokens are start, start+1, ...: positions are visible in the ids."""
    tokens = np.arange(start, start + sum(lengths), dtype=np.int32)
    return tokens, np.array(lengths, dtype=np.int32)


def batch_of(docs):
    """A DocumentBatch of (doc_id, tokens, sentence lengths) triples."""
    return DocumentBatch(
        np.array([d for d, _, _ in docs], dtype=np.uint64),
        np.array([len(lens) for _, _, lens in docs], dtype=np.int64),
        np.concatenate([lens for _, _, lens in docs]).astype(np.int64),
        np.concatenate([t for _, t, _ in docs]),
    )


def pair_doc(doc_id, lengths, params, seed, passes=1, start=0):
    tokens, lens = doc_of(*lengths, start=start)
    plan = DocumentPlan()
    for p in range(passes):
        plan_document(doc_id, lens.tolist(), p, seed, params, plan)
    pairs, requests, donors = plan_blocks(batch_of([(doc_id, tokens, lens)]), [plan], seed, params.max_num_tokens)
    return plan, pairs, requests, donors


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
    _, pairs, _, _ = pair_doc(1, [40, 40, 40, 40, 40], PairingParams(max_seq_length=90, short_seq_prob=0.0), 3, 4)
    out, removed = truncate_pairs(pairs, 47)
    assert len(pairs) > 3
    for i in range(len(pairs)):
        assert len(out.a.row(i)) + len(out.b.row(i)) <= 47
        for full, window in ((pairs.a.row(i), out.a.row(i)), (pairs.b.row(i), out.b.row(i))):
            assert len(window) >= 1
            start = int(np.flatnonzero(full == window[0])[0])
            assert np.array_equal(full[start : start + len(window)], window)
    assert removed == len(pairs.a.values) + len(pairs.b.values) - len(out.a.values) - len(out.b.values)


@pytest.mark.parametrize("seed", range(30))
def test_golden_three_sentence_document(seed):
    """[0,1,2] [3,4,5] [6,7,8], room for 6 tokens: each chunk is two sentences (or the last one)."""
    plan, pairs, requests, donors = pair_doc(7, [3, 3, 3], PairingParams(max_seq_length=9, short_seq_prob=0.0), seed)
    allowed_next = {((0, 1, 2), (3, 4, 5)), ((3, 4, 5), (6, 7, 8))}
    for i in range(len(pairs)):
        a, b = tuple(pairs.a.row(i).tolist()), tuple(pairs.b.row(i).tolist())
        # IsNext: two consecutive sentences, or the last sentence split inside itself
        assert (a, b) in allowed_next or (a + b == (6, 7, 8) and a and b)
    assert not pairs.random_next.any() and np.all(pairs.doc_a == 7) and np.all(pairs.doc_b == 7)
    for i in range(len(requests)):
        a = tuple(requests.a.row(i).tolist())
        assert a in {(0, 1, 2), (3, 4, 5), (6, 7, 8)}
        assert requests.target_b[i] == 6 - len(a)
    # A random next puts the unused sentence back, so the walk covers all sentences as A or B.
    covered = set(pairs.a.values.tolist()) | set(pairs.b.values.tolist()) | set(requests.a.values.tolist())
    assert covered == set(range(9))
    assert len(donors) == len(requests)
    for i in range(len(donors)):  # whole sentences from a sentence start, up to the longest B (6)
        row = donors.tokens.row(i).tolist()
        assert row[0] in (0, 3, 6) and row == list(range(row[0], min(row[0] + 6, 9)))
        assert donors.sentence_ends.row(i).tolist() == list(range(3, len(row) + 1, 3))


def test_label_is_a_fair_coin_even_for_single_sentence_documents():
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    n_next = n_random = 0
    for doc_id in range(4000):
        _, pairs, requests, _ = pair_doc(doc_id, [12], params, 99)  # the reference: always random
        n_next += len(pairs)
        n_random += len(requests)
        for i in range(len(pairs)):
            assert np.array_equal(np.concatenate([pairs.a.row(i), pairs.b.row(i)]), np.arange(12))
    assert n_next + n_random == 4000
    assert abs(n_random - 2000) < 4 * np.sqrt(4000 * 0.25)


def test_one_token_document_cannot_be_isnext_and_is_counted():
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    unpairable = sum(plan_document(d, [1], 0, 5, params).unpairable for d in range(200))
    assert 60 < unpairable < 140


def test_short_seq_prob_draws_shorter_targets():
    lengths = [5] * 200
    long_ = pair_doc(1, lengths, PairingParams(64, 0.0), 1)[1]
    short = [pair_doc(d, lengths, PairingParams(64, 1.0), 1)[1] for d in range(20)]
    mean_short = np.mean([np.mean(p.a.lengths + p.b.lengths) for p in short])
    assert mean_short < 0.7 * np.mean(long_.a.lengths + long_.b.lengths)


def test_pairing_is_deterministic_and_pass_dependent():
    params = PairingParams(max_seq_length=40, short_seq_prob=0.1)
    lengths = [7] * 30
    a = pair_doc(3, lengths, params, 1)[1]
    b = pair_doc(3, lengths, params, 1)[1]
    plan_c = plan_document(3, lengths, 1, 1, params)
    assert np.array_equal(a.key, b.key) and np.array_equal(a.a.values, b.a.values)
    assert [t[2:] for t in plan_document(3, lengths, 0, 1, params).pairs] != [t[2:] for t in plan_c.pairs]


def test_plan_blocks_of_a_batch_equal_blocks_of_each_document():
    params = PairingParams(max_seq_length=40, short_seq_prob=0.1)
    docs = [(10 + d, *doc_of(*[3 + d, 9, 4 + 2 * d, 11, 6], start=100 * d)) for d in range(4)]
    plans = [plan_document(d, lens.tolist(), 0, 2, params) for d, _, lens in docs]
    together = plan_blocks(batch_of(docs), plans, 2, params.max_num_tokens)
    alone = [plan_blocks(batch_of([doc]), [plan], 2, params.max_num_tokens) for doc, plan in zip(docs, plans)]
    for part, cls in enumerate((PairBlock, RequestBlock, DonorBlock)):
        joined = cls.concat([a[part] for a in alone])
        assert np.array_equal(joined.key, together[part].key)
    assert np.array_equal(PairBlock.concat([a[0] for a in alone]).b.values, together[0].b.values)
    assert np.array_equal(DonorBlock.concat([a[2] for a in alone]).tokens.values, together[2].tokens.values)


def requests_and_donors(n_req, n_don, docs, seed, target=10):
    rnd = random.Random(seed)
    rk = np.array([rnd.getrandbits(64) for _ in range(n_req)], dtype=np.uint64)
    dk = np.array([rnd.getrandbits(64) for _ in range(n_don)], dtype=np.uint64)
    requests = RequestBlock(rk, np.array([rnd.randrange(docs) for _ in range(n_req)], dtype=np.uint64),
                            np.full(n_req, target), Ragged(np.arange(5 * n_req), np.arange(n_req + 1) * 5))
    donors = DonorBlock(dk, np.array([rnd.randrange(docs) for _ in range(n_don)], dtype=np.uint64),
                        Ragged(np.arange(12 * n_don), np.arange(n_don + 1) * 12),
                        Ragged(np.tile([4, 8, 12], n_don), np.arange(n_don + 1) * 3))
    return requests, donors


def test_resolve_never_uses_the_requesting_document():
    requests, donors = requests_and_donors(500, 500, 3, 0)
    pairs, unresolved = resolve_random_next(requests, donors)
    assert unresolved == 0 and len(pairs) == 500
    assert np.all(pairs.doc_a != pairs.doc_b) and np.all(pairs.random_next == 1)
    assert np.all(pairs.b.lengths == 12)  # whole sentences (4 each) until the target (10) is reached
    assert len(set(pairs.doc_b.tolist())) == 3  # the draw is spread, not stuck on one donor


def test_b_stops_at_the_first_sentence_reaching_the_target():
    requests, donors = requests_and_donors(50, 50, 7, 1, target=5)
    pairs, _ = resolve_random_next(requests, donors)
    assert np.all(pairs.b.lengths == 8)
    for i in range(len(pairs)):  # B is a prefix of the donor's tokens
        assert pairs.b.row(i)[0] % 12 == 0 and np.all(np.diff(pairs.b.row(i)) == 1)


def test_resolve_counts_requests_with_only_their_own_document_available():
    requests, donors = requests_and_donors(5, 5, 1, 2)
    pairs, unresolved = resolve_random_next(requests, donors)
    assert len(pairs) == 0 and unresolved == 5


def test_resolve_is_independent_of_input_order():
    requests, donors = requests_and_donors(100, 100, 9, 3)
    a, _ = resolve_random_next(requests, donors)
    rev = np.arange(99, -1, -1)
    b, _ = resolve_random_next(requests.take(rev), donors.take(rev))
    assert np.array_equal(a.key, b.key) and np.array_equal(a.doc_b, b.doc_b)
    assert np.array_equal(a.b.values, b.b.values)
