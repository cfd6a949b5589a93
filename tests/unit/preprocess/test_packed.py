import numpy as np

from preprocess.packed import PairBlock, Ragged, gather_ranges


def test_gather_ranges_equals_concatenated_slices():
    flat = np.arange(100)
    starts, lengths = np.array([5, 0, 90, 40]), np.array([3, 0, 10, 1])
    expected = np.concatenate([flat[s : s + n] for s, n in zip(starts, lengths)])
    assert np.array_equal(gather_ranges(flat, starts, lengths), expected)
    assert len(gather_ranges(flat, np.array([3]), np.array([0]))) == 0


def test_ragged_take_window_and_concat():
    r = Ragged.over(np.arange(20), np.array([0, 10, 4]), np.array([4, 6, 2]))
    assert [r.row(i).tolist() for i in range(3)] == [[0, 1, 2, 3], [10, 11, 12, 13, 14, 15], [4, 5]]
    t = r.take(np.array([2, 0]))
    assert [t.row(i).tolist() for i in range(2)] == [[4, 5], [0, 1, 2, 3]]
    w = r.window(np.array([1, 0, 0]), np.array([1, 2, 1]))
    assert [w.row(i).tolist() for i in range(3)] == [[1, 2], [10, 11, 12, 13], [4]]
    c = Ragged.concat([r, t])
    assert len(c) == 5 and c.row(4).tolist() == [0, 1, 2, 3]


def test_block_take_and_concat_keep_rows_aligned():
    ids = np.arange(4, dtype=np.uint64)
    a = Ragged.over(np.arange(40), np.arange(4) * 10, np.array([1, 2, 3, 4]))
    block = PairBlock(ids, ids + 100, ids + 200, np.array([0, 1, 0, 1], dtype=np.int8), a, a)
    sub = block.take(np.array([3, 1]))
    assert sub.key.tolist() == [3, 1] and sub.doc_b.tolist() == [203, 201]
    assert sub.a.row(0).tolist() == [30, 31, 32, 33]
    both = PairBlock.concat([sub, PairBlock.empty(), block.take(np.array([0]))])
    assert both.key.tolist() == [3, 1, 0] and both.b.row(2).tolist() == [0]


def test_selected_rows_stay_in_place_and_pickle_packed():
    import pickle

    buffer = np.arange(100_000, dtype=np.int32)
    r = Ragged.over(buffer, np.array([10, 500, 90_000]), np.array([3, 2, 4]))
    t = r.take(np.array([2, 0])).window(np.array([1, 0]), np.array([0, 1]))
    assert t.buffer is buffer  # no copy yet
    assert [t.row(i).tolist() for i in range(2)] == [[90_001, 90_002, 90_003], [10, 11]]
    data = pickle.dumps(t)
    assert len(data) < 1_000  # only the 5 selected values travel, not the buffer
    back = pickle.loads(data)
    assert back.values.tolist() == [90_001, 90_002, 90_003, 10, 11] and back.lengths.tolist() == [3, 2]
    assert back.packed and not t.packed
