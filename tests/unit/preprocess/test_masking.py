import numpy as np
import pytest

from preprocess.masking import MaskingParams, MaskVocab, mask_batch, num_to_predict

CLS, SEP, MASK = 2, 3, 4
VOCAB = 1000
IS_CONT = np.zeros(VOCAB, dtype=bool)
IS_CONT[500:] = True  # ids >= 500 play "##" pieces
MV = MaskVocab(mask_id=MASK, random_ids=np.arange(5, VOCAB), is_continuation=IS_CONT)


def make_batch(lengths_a, lengths_b, seed=0):
    r = np.random.default_rng(seed)
    rows, b_starts = [], []
    for la, lb in zip(lengths_a, lengths_b):
        a = r.integers(5, 500, la)
        b = r.integers(5, 500, lb)
        rows.append(np.concatenate([[CLS], a, [SEP], b, [SEP]]))
        b_starts.append(la + 2)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in rows])])
    keys = (np.arange(len(rows), dtype=np.uint64) + np.uint64(seed * 100_000)) * np.uint64(2654435761)
    return np.concatenate(rows), offsets, np.array(b_starts), keys


def test_budget_follows_the_reference_formula():
    params = MaskingParams(0.15, 20)
    lengths = np.array([4, 5, 13, 17, 50, 128, 500])
    expected = [min(20, max(1, int(round(n * 0.15))), n - 3) for n in lengths]
    assert num_to_predict(lengths, params).tolist() == expected


def test_masks_respect_budget_never_touch_specials_and_are_recoverable():
    tokens, offsets, b_starts, keys = make_batch([10, 40, 3, 60], [20, 30, 1, 62])
    params = MaskingParams(0.15, 20)
    out = mask_batch(tokens, offsets, b_starts, keys, params, MV)
    lengths = np.diff(offsets)
    budget = num_to_predict(lengths, params)
    for r in range(len(lengths)):
        pos = out.positions[out.label_offsets[r] : out.label_offsets[r + 1]]
        labels = out.labels[out.label_offsets[r] : out.label_offsets[r + 1]]
        assert len(pos) == budget[r]
        assert np.all(np.diff(pos) > 0)
        assert not set(pos.tolist()) & {0, b_starts[r] - 1, lengths[r] - 1}
        row = out.input_ids[offsets[r] : offsets[r + 1]].copy()
        row[pos] = labels
        assert np.array_equal(row, tokens[offsets[r] : offsets[r + 1]])


def test_a_row_is_masked_the_same_in_any_batch():
    tokens, offsets, b_starts, keys = make_batch([30] * 6, [30] * 6)
    params = MaskingParams(0.15, 20)
    whole = mask_batch(tokens, offsets, b_starts, keys, params, MV)
    lo, hi = offsets[3], offsets[4]
    alone = mask_batch(tokens[lo:hi], np.array([0, hi - lo]), b_starts[3:4], keys[3:4], params, MV)
    assert np.array_equal(alone.input_ids, whole.input_ids[lo:hi])
    assert np.array_equal(alone.positions, whole.positions[whole.label_offsets[3] : whole.label_offsets[4]])


def test_80_10_10_split_and_positions_are_uniform_over_candidates():
    tokens, offsets, b_starts, keys = make_batch([60] * 3000, [61] * 3000, seed=1)
    out = mask_batch(tokens, offsets, b_starts, keys, MaskingParams(0.15, 20), MV)
    n = out.actions.sum()
    assert n == 3000 * 19  # round(124 * 0.15) = 19
    for observed, p in zip(out.actions, (0.8, 0.1, 0.1)):
        assert abs(observed - n * p) < 4 * np.sqrt(n * p * (1 - p))
    hist = np.bincount(out.positions, minlength=124)[1:123]
    hist = np.delete(hist, 60)  # position 61 (b_start - 1) is the first [SEP]
    expected = n / 121
    assert np.all(np.abs(hist - expected) < 5 * np.sqrt(expected))
    # random replacements come from ordinary tokens only
    replaced = out.input_ids[(out.input_ids != tokens) & (out.input_ids != MASK)]
    assert replaced.size > 0 and replaced.min() >= 5


def test_whole_word_masking_takes_whole_words_within_budget():
    r = np.random.default_rng(5)
    rows, b_starts = [], []
    for _ in range(300):
        a = np.where(r.random(40) < 0.4, r.integers(500, 1000, 40), r.integers(5, 500, 40))
        b = np.where(r.random(40) < 0.4, r.integers(500, 1000, 40), r.integers(5, 500, 40))
        a[0] = b[0] = 7  # segments start with a word, not a continuation
        rows.append(np.concatenate([[CLS], a, [SEP], b, [SEP]]))
        b_starts.append(42)
    tokens = np.concatenate(rows)
    offsets = np.arange(301) * 83
    keys = np.arange(300, dtype=np.uint64) * np.uint64(977)
    params = MaskingParams(0.15, 20, whole_word_mask=True)
    out = mask_batch(tokens, offsets, np.array(b_starts), keys, params, MV)
    total = 0
    for i in range(300):
        row = tokens[offsets[i] : offsets[i + 1]]
        pos = set(out.positions[out.label_offsets[i] : out.label_offsets[i + 1]].tolist())
        assert len(pos) <= 12  # round(83 * 0.15)
        total += len(pos)
        for p in pos:  # a chosen piece's whole word is chosen
            if IS_CONT[row[p]]:
                assert p - 1 in pos or row[p - 1] in (CLS, SEP)
            if p + 1 < len(row) and IS_CONT[row[p + 1]] and row[p] not in (CLS, SEP):
                assert p + 1 in pos
    assert total > 300 * 10  # the budget is mostly filled


@pytest.mark.parametrize("prob,maxp", [(0.15, 20), (0.3, 80), (0.05, 5)])
def test_masked_fraction_tracks_the_probability(prob, maxp):
    tokens, offsets, b_starts, keys = make_batch([100] * 200, [100] * 200, seed=2)
    out = mask_batch(tokens, offsets, b_starts, keys, MaskingParams(prob, maxp), MV)
    assert len(out.positions) == 200 * min(maxp, round(203 * prob))
