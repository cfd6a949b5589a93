import numpy as np

from preprocess.integrity import Rows, check_rows, row_checksums


def rows() -> Rows:
    """Three rows: [CLS] A [SEP] B [SEP] with masked positions, as the job writes them."""
    ids = np.array([2, 10, 11, 3, 12, 3, 2, 13, 3, 14, 15, 3, 2, 16, 17, 3, 18, 3], dtype=np.uint16)
    return Rows(ids, np.array([0, 6, 12, 18]), np.array([1, 4, 2, 1, 4], dtype=np.uint16),
                np.array([20, 21, 22, 23, 24], dtype=np.uint16), np.array([0, 2, 3, 5]),
                np.array([4, 3, 4], dtype=np.uint16), np.array([0, 1, 0], dtype=np.int8),
                np.array([7, 8, 9], dtype=np.uint64), np.array([7, 1, 9], dtype=np.uint64))


def flipped(r: Rows, field: str, index: int, bit: int) -> Rows:
    values = getattr(r, field).copy()
    raw = values.view(np.uint8)
    raw[index * values.itemsize + bit // 8] ^= 1 << (bit % 8)
    return Rows(**{**vars(r), field: values})


def test_every_single_bit_flip_in_a_row_changes_its_checksum():
    r = rows()
    base = row_checksums(r)
    assert len(set(base.tolist())) == 3
    for field in ("ids", "positions", "labels", "b_start", "nsp", "doc_a", "doc_b"):
        values = getattr(r, field)
        for index in range(len(values)):
            for bit in range(values.itemsize * 8):
                changed = row_checksums(flipped(r, field, index, bit))
                assert (changed != base).sum() == 1, (field, index, bit)  # that row, and only it


def test_a_row_moved_or_cut_changes_its_checksum():
    r = rows()
    base = row_checksums(r)
    shorter = Rows(**{**vars(r), "id_offsets": np.array([0, 6, 11, 18])})  # a damaged offset
    assert (row_checksums(shorter) != base).sum() == 2
    swapped = Rows(**{**vars(r), "labels": r.labels[[1, 0, 2, 3, 4]]})  # values trading places
    assert (row_checksums(swapped) != base).tolist() == [True, False, False]


def test_range_checks_flag_the_row_that_breaks_them():
    r = rows()
    assert not check_rows(r, vocab_size=30).any()
    assert check_rows(r, vocab_size=20).tolist() == [True, True, True]  # labels 20..24 outside the vocabulary
    for field, index, value, bad_row in (("ids", 7, 99, 1), ("positions", 4, 5, 2), ("positions", 0, 0, 0),
                                         ("b_start", 1, 6, 1), ("nsp", 2, 3, 2)):
        values = getattr(r, field).copy()
        values[index] = value
        assert check_rows(Rows(**{**vars(r), field: values}), 30).tolist() == [i == bad_row for i in range(3)]
