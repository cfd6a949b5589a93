"""Stage 4: resolving random-next pairs, masking, and placing rows in shards."""

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocess.pairs import PairingParams
from preprocess.stages.mask import MaskInstances, mask_bucket, placements
from preprocess.stages.pair import CreatePairs, pair_batch

from .helpers import docs, row_spec, rows_of


def test_mask_instances_resolves_random_next_and_balances_shards(vocab_file, tmp_path):
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    spec = row_spec(vocab_file)
    with TestPipeline() as p:
        pairs = p | beam.Create(docs()) | CreatePairs("train", params, 2, 7, 3)
        rows = (pairs["items"] | MaskInstances(str(tmp_path), "train", spec, params.max_num_tokens, 3,
                                               pairs["counts"]))["rows"]
        tables = rows | beam.Map(lambda e: (e[0][0], rows_of(e[1][1])))
        per_shard = tables | beam.Map(lambda e: (e[0], e[1].num_rows)) | "SumRows" >> beam.CombinePerKey(sum)

        def balanced(counts_):
            sizes = sorted(c for _, c in counts_)
            assert len(sizes) == 3 and sizes[-1] - sizes[0] <= 1, sizes
            return True

        assert_that(per_shard | beam.combiners.ToList() | beam.Map(balanced), equal_to([True]), label="balance")

        def negatives_ok(e):
            t = e[1]
            nsp = t.column("next_sentence_label").to_numpy()
            a, b = t.column("doc_id_a").to_numpy(), t.column("doc_id_b").to_numpy()
            return bool(np.all((a != b) == (nsp == 1)))

        assert_that(tables | beam.Map(negatives_ok) | beam.Filter(lambda ok: not ok), equal_to([]), label="nsp")
        parked = rows | beam.Filter(lambda e: not isinstance(e[1][1], pa.RecordBatch)) | beam.combiners.Count.Globally()
        assert_that(parked, equal_to([3]), label="parked")  # every bucket keeps most rows for its shard


def test_mask_bucket_places_every_row_once_in_position_order(vocab_file):
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    spec = row_spec(vocab_file)
    planned = [pair_batch(b, params, 2, 7, 3) for b in docs()]
    groups = {b: [] for b in range(3)}
    counts = {b: 0 for b in range(3)}
    for items, bucket_counts, _ in planned:
        for bucket, blocks in items:
            groups[bucket].append(blocks)
        for bucket, n in bucket_counts:
            counts[bucket] += n
    positions, stats = [], []
    places = dict(placements(counts))
    assert places == {0: (0, sum(counts.values())), 1: (counts[0], sum(counts.values())),
                      2: (counts[0] + counts[1], sum(counts.values()))}
    for bucket in range(3):
        first, total = places[bucket]
        for piece in mask_bucket(bucket, groups[bucket], first, total, spec, params.max_num_tokens, num_shards=3):
            if isinstance(piece, dict):
                stats.append(piece)
                continue
            shard, shards, first, rows = piece
            assert shards == 3 and shard == first * 3 // sum(counts.values())
            positions += range(first, first + rows.num_rows)
    assert positions == list(range(sum(counts.values())))  # every row once, in global order
    assert sum(s["rows"] for s in stats) == sum(counts.values())
