"""Stage 4: resolving random-next pairs, masking, and placing rows in shards."""

import pickle

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from preprocess.pairs import PairingParams
from preprocess.shards import PARTS_DIR
from preprocess.sizing import ShardSizing
from preprocess.stages.counting import SCRATCH, STATS
from preprocess.stages.mask import MaskInstances, ParkedRows, mask_bucket, placements, sum_counts
from preprocess.stages.pair import CreatePairs, pair_batch

from .helpers import docs, row_spec, rows_of


def shards(count=None, size=1 << 20):
    return ShardSizing(count, size, 2, 0.15, 5)


def test_mask_instances_resolves_random_next_and_balances_shards(vocab_file, tmp_path):
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    spec = row_spec(vocab_file)
    with TestPipeline() as p:  # 5 buckets, 3 shards: a shard gathers the rows of several buckets
        pairs = p | beam.Create(docs()) | CreatePairs("train", params, 2, 7, 5)
        rows = (pairs["items"] | MaskInstances(str(tmp_path), "train", spec, params.max_num_tokens, shards(3),
                                               pairs["counts"], 5))["rows"]
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
        inline = rows | beam.Filter(lambda e: not isinstance(e[1][1], ParkedRows))
        assert_that(inline, equal_to([]), label="parked")  # rows travel as files, never through the shuffle
        pieces = rows | beam.combiners.Count.Globally()
        assert_that(pieces, equal_to([5 + 2]), label="pieces")  # a piece per bucket, two more where shards begin


def masked_rows(vocab_file, output, groups, spill=True):
    """Every piece of the rows of 5 buckets in 3 shards masked in ``groups`` groups, in position order, and
    the scratch counted."""
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    spec = row_spec(vocab_file)
    with TestPipeline() as p:
        pairs = p | beam.Create(docs(40)) | CreatePairs("train", params, 2, 7, 5, groups,
                                                         str(output / PARTS_DIR) if spill else None)
        masked = pairs["items"] | MaskInstances(str(output), "train", spec, params.max_num_tokens, shards(3),
                                                pairs["counts"], 5, groups)
        pieces = masked["rows"] | beam.Map(lambda e: (e[0][0], e[1][0], rows_of(e[1][1]).to_pydict()))
        scratch = masked[STATS] | beam.Filter(lambda kv: kv[0] == SCRATCH) | beam.Map(lambda kv: kv[1]["bytes"])
        for name, found in (("pieces", pieces), ("scratch", scratch)):
            _ = found | f"List{name}" >> beam.combiners.ToList() | f"Keep{name}" >> beam.Map(
                lambda values, path: path.write_bytes(pickle.dumps(values)), output / f"{name}.pickle")
    pieces = pickle.loads((output / "pieces.pickle").read_bytes())
    return sorted(pieces, key=lambda e: e[1]), sum(pickle.loads((output / "scratch.pickle").read_bytes()))


def test_groups_of_buckets_change_how_the_work_is_cut_never_the_rows(vocab_file, tmp_path):
    alone, scratch_alone = masked_rows(vocab_file, tmp_path / "alone", None)  # a group per bucket
    assert len({shard for shard, _, _ in alone}) == 3 and len(alone) > 3
    for groups in (2, 1):  # buckets 0-2 and 3-4; all five together
        grouped, scratch = masked_rows(vocab_file, tmp_path / f"in-{groups}", groups)
        assert grouped == alone
        assert scratch > scratch_alone  # the group's blocks spread into files per bucket are counted
        assert not list((tmp_path / f"in-{groups}" / PARTS_DIR).glob("*-group-*"))  # and removed once masked
    inline, _ = masked_rows(vocab_file, tmp_path / "inline", 2, spill=False)
    assert inline == alone


def test_mask_bucket_places_every_row_once_in_position_order(vocab_file):
    params = PairingParams(max_seq_length=32, short_seq_prob=0.0)
    spec = row_spec(vocab_file)
    planned = [pair_batch(b, params, 2, 7, 3) for b in docs()]
    groups = {b: [] for b in range(3)}
    counts = {b: (0, 0) for b in range(3)}
    for items, group_counts, _ in planned:
        for bucket, blocks in items:
            groups[bucket].append(blocks)
        for bucket, (n, t) in sum_counts(c for _, c in group_counts).items():
            counts[bucket] = (counts[bucket][0] + n, counts[bucket][1] + t)
    positions, stats, tokens = [], [], 0
    total = sum(n for n, _ in counts.values())
    places = dict(placements(counts, shards(3)))
    assert places == {0: (0, total, 3), 1: (counts[0][0], total, 3), 2: (counts[0][0] + counts[1][0], total, 3)}
    for bucket in range(3):
        first, total, count = places[bucket]
        for piece in mask_bucket(bucket, groups[bucket], first, total, count, spec, params.max_num_tokens):
            if isinstance(piece, dict):
                stats.append(piece)
                continue
            shard, first, rows = piece
            assert shard == first * 3 // total
            positions += range(first, first + rows.num_rows)
            tokens += len(rows.column("input_ids").flatten())
    assert positions == list(range(total))  # every row once, in global order
    assert sum(s["rows"] for s in stats) == total
    counted = sum(t for _, t in counts.values())  # a random B counted at the length asked of it
    assert tokens <= counted <= 1.05 * tokens


def test_the_shard_count_follows_the_size_of_the_output():
    counts = {0: (600, 60_000), 1: (400, 40_000)}  # 100,000 tokens: ~250 KB of uint16 rows
    assert {c for _, (_, _, c) in placements(counts, shards(size=1 << 20))} == {1}
    one_shard = placements(counts, shards(size=1 << 30))
    assert one_shard == [(0, (0, 1000, 1)), (1, (600, 1000, 1))]
    assert {c for _, (_, _, c) in placements(counts, shards(count=7))} == {7}
    assert placements({0: (2, 100)}, shards(count=7)) == [(0, (0, 2, 2))]  # never an empty shard
