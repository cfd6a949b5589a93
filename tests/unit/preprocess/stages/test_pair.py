"""Stage 3: pairing documents into (groups of) key buckets, spilled or inline."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocess.pairs import PairingParams
from preprocess.sizing import group_of
from preprocess.stages.mask import sum_counts
from preprocess.stages.pair import CreatePairs, bucket_of, pair_batch, row_token_counts

from .helpers import docs


@pytest.mark.parametrize("groups", [None, 3])
def test_create_pairs_routes_items_to_groups_of_key_buckets_and_counts_rows(groups):
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    with TestPipeline() as p:
        out = p | beam.Create(docs()) | CreatePairs("train", params, 2, 7, 8, groups)
        items, counts = out["items"], out["counts"]

        def check(element):
            group, (pairs, requests, donors) = element
            for block in (pairs, requests, donors):
                assert np.all(group_of(bucket_of(block.key, 8), 8, groups or 8) == group)
            rows = np.bincount(bucket_of(np.concatenate([pairs.key, requests.key]), 8).astype(int), minlength=8)
            return {int(b): int(rows[b]) for b in np.flatnonzero(rows)}

        per_group = items | beam.Map(lambda e: (e[0], check(e))) | "SumItems" >> beam.CombinePerKey(
            lambda parts: {b: sum(c.get(b, 0) for c in parts) for b in set().union(*parts)})
        summed = counts | "SumCounts" >> beam.CombinePerKey(sum_counts) | beam.MapTuple(
            lambda g, c: (g, {b: rows for b, (rows, _) in c.items()}))
        joined = ({"items": per_group, "counts": summed} | beam.CoGroupByKey()
                  | beam.Map(lambda kv: kv[1]["items"] == kv[1]["counts"]))
        assert_that(joined | beam.combiners.Count.Globally(), equal_to([groups or 8]), label="groups")
        assert_that(joined | beam.Filter(lambda ok: not ok), equal_to([]), label="consistent")


def test_pairing_can_spill_blocks_to_files(tmp_path):
    from preprocess.stages.pair import SpilledBlocks, _PairFn

    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    batch = docs()[0]

    def items(spill_dir):
        fn = _PairFn("train", params, 2, 7, 4, None, spill_dir)
        return [value for tag, value in fn.process(batch) if tag == "items"]

    inline, spilled = items(None), items(str(tmp_path / "spill"))
    assert [b for b, _ in inline] == [b for b, _ in spilled] == [0, 1, 2, 3]
    assert all(isinstance(ref, SpilledBlocks) for _, ref in spilled)
    assert len({ref.path for _, ref in spilled}) == 1  # one file per batch, a range per bucket
    for (_, blocks), (_, ref) in zip(inline, spilled):
        for a, b in zip(blocks, ref.load()):
            assert np.array_equal(a.key, b.key)
    assert np.array_equal(inline[1][1][0].a.values, spilled[1][1].load()[0].a.values)


def test_pair_batch_is_a_pure_function_of_its_inputs():
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    batch = docs()[0]
    items, counts, stats = pair_batch(batch, params, dupe_factor=2, seed=7, buckets=4)
    again, _, _ = pair_batch(batch, params, dupe_factor=2, seed=7, buckets=4)
    assert stats["documents"] == len(batch)
    for (bucket, blocks), (bucket2, blocks2) in zip(items, again):
        assert bucket == bucket2 and all(np.array_equal(a.key, b.key) for a, b in zip(blocks, blocks2))
        for block in blocks:
            assert (bucket_of(block.key, 4) == bucket).all()  # each block sits in its key's bucket
    assert dict(counts) == {b: {b: (len(p) + len(q), int(row_token_counts(p, q, params.max_num_tokens).sum()))}
                            for b, (p, q, _) in items if len(p) or len(q)}
    assert all(t > 3 * n for c in dict(counts).values() for n, t in c.values())
    grouped, grouped_counts, _ = pair_batch(batch, params, dupe_factor=2, seed=7, buckets=4, groups=2)
    assert [g for g, _ in grouped] == [0, 1]  # buckets 0-1 and 2-3
    assert sum_counts(c for _, c in grouped_counts) == sum_counts(c for _, c in counts)
    other, _, _ = pair_batch(batch, params, dupe_factor=2, seed=8, buckets=4)
    assert not np.array_equal(items[0][1][0].key, other[0][1][0].key)  # the seed decides the keys
