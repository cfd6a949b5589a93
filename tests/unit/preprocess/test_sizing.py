"""How the work is cut by size: buckets from the inputs' text, shards from the output's bytes."""

import numpy as np

from preprocess.sizing import (
    BUCKET_TEXT_BYTES,
    BUCKETS_PER_GROUP_MAX,
    GROUPS_MIN,
    ShardSizing,
    bucket_count,
    estimated_bytes,
    group_buckets,
    group_count,
    group_of,
    shard_count,
    text_bytes,
)


def test_buckets_keep_their_size_as_the_corpus_grows():
    assert text_bytes({"a.txt": 1000, "b.jsonl.gz": 1000, "c.parquet": 10}) == 1000 + 3000 + 30
    assert bucket_count(1 << 20, 1.0, 5) == 1
    for text in (10 << 30, 100 << 30):
        buckets = bucket_count(text, 0.99, 5)
        assert BUCKET_TEXT_BYTES * 0.99 < text * 0.99 * 5 / buckets <= BUCKET_TEXT_BYTES
    assert bucket_count(100 << 30, 0.01, 5) < bucket_count(100 << 30, 0.99, 5)  # validation: its share


def test_buckets_travel_in_groups_whose_count_grows_slower_than_the_buckets():
    assert group_count(1) == 1 and group_count(GROUPS_MIN) == GROUPS_MIN  # a group per bucket up to GROUPS_MIN
    for text in (1 << 30, 20 << 30, 2 << 40):  # 1 GB, 20 GB, 2 TB
        buckets = bucket_count(text, 1.0, 5)
        groups = group_count(buckets)
        sizes = [len(group_buckets(g, buckets, groups)) for g in range(groups)]
        assert sum(sizes) == buckets and max(sizes) - min(sizes) <= 1 and max(sizes) <= BUCKETS_PER_GROUP_MAX
        assert min(buckets, GROUPS_MIN) <= groups <= max(GROUPS_MIN, buckets / BUCKETS_PER_GROUP_MAX + 1)
        assert all(group_of(b, buckets, groups) == g for g in (0, groups // 2, groups - 1)
                   for b in group_buckets(g, buckets, groups))
    # at 2 TB: ~300,000 buckets in ~1,200 groups, so ~250x fewer references through the shuffle
    assert bucket_count(2 << 40, 1.0, 5) / group_count(bucket_count(2 << 40, 1.0, 5)) > 200


def test_the_output_estimate_is_the_written_shards_size(vocab_file, tmp_path):
    from preprocess.packed import PairBlock, Ragged
    from preprocess.shards import ShardWriter, build_rows, schema
    from tests.unit.preprocess.stages.helpers import row_spec

    r = np.random.default_rng(0)
    n = 20_000
    la, lb = r.integers(10, 60, n), r.integers(10, 60, n)
    pairs = PairBlock(r.integers(0, 2**63, n, dtype=np.uint64), np.ones(n, np.uint64), np.full(n, 2, np.uint64),
                      r.integers(0, 2, n).astype(np.int8),
                      Ragged(r.integers(5, 3000, int(la.sum())).astype(np.uint16), np.concatenate([[0], np.cumsum(la)])),
                      Ragged(r.integers(5, 3000, int(lb.sum())).astype(np.uint16), np.concatenate([[0], np.cumsum(lb)])))
    spec = row_spec(vocab_file, seq=128)
    batch, _ = build_rows(pairs, spec)
    writer = ShardWriter(str(tmp_path / "s.arrow"), schema(np.dtype("uint16")))
    writer.write(batch)
    size, _ = writer.close()
    sizing = ShardSizing(None, 1 << 20, 2, spec.masking.masked_lm_prob, spec.masking.max_predictions_per_seq)
    estimate = estimated_bytes(n, writer.tokens, sizing)
    assert 0.95 < estimate / size < 1.05
    assert shard_count(n, writer.tokens, sizing) == round(estimate / (1 << 20))


def test_dask_shuffle_partitions_follow_the_threads_and_the_heavy_ones_no_more_than_their_keys():
    from preprocess.sizing import shuffle_partitions

    assert shuffle_partitions(2, 30) == (4, 8)  # 4x the threads when the keys are more
    assert shuffle_partitions(4, 12) == (8, 12)  # no more partitions than groups (or shards) to go in them
    assert shuffle_partitions(2, 1) == (4, 4)  # never fewer than the other shuffles'
    assert shuffle_partitions(300, 10**6) == (600, 1024)  # at most 1,024
