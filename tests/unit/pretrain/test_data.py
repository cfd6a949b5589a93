import numpy as np
import pytest
import torch

from pretrain.data import BatchPlan, Collator, Layout, StepSampler, unpacked


def take(sampler, n):
    """The first n micro-batches as row indices (the sampler also carries each row's epoch)."""
    it = iter(sampler)
    return [[i for i, _ in next(it).rows] for _ in range(n)]


def test_ranks_take_disjoint_slices_that_cover_each_global_batch():
    plans = [BatchPlan(rows=100, global_batch=16, micro_batch=4, world_size=2, rank=r, seed=3) for r in range(2)]
    assert plans[0].accumulation == 2 and plans[0].steps_per_epoch == 6
    per_rank = [take(StepSampler(p), 12) for p in plans]  # 6 steps x 2 micro-batches
    for step in range(6):
        rows = [i for r in range(2) for mb in per_rank[r][2 * step : 2 * step + 2] for i in mb]
        assert len(rows) == len(set(rows)) == 16
    epoch = {i for r in range(2) for mb in per_rank[r] for i in mb}
    assert len(epoch) == 96  # one epoch: 6 full global batches, no row twice


def test_resume_at_a_step_continues_the_same_sequence_across_epochs():
    plan = BatchPlan(rows=50, global_batch=8, micro_batch=4, world_size=1, rank=0, seed=9)
    full = take(StepSampler(plan), 40)  # crosses several epochs (6 steps each)
    for start in (1, 5, 6, 13):
        assert take(StepSampler(plan, start_step=start), 10) == full[2 * start : 2 * start + 10]


def test_epochs_are_reshuffled_deterministically():
    plan = BatchPlan(rows=64, global_batch=8, micro_batch=8, world_size=1, rank=0, seed=1)
    s = StepSampler(plan)
    assert not np.array_equal(s.permutation(0), s.permutation(1))
    assert np.array_equal(s.permutation(1), StepSampler(plan).permutation(1))


def test_too_small_a_split_is_an_error():
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        StepSampler(BatchPlan(rows=7, global_batch=8, micro_batch=8, world_size=1, rank=0, seed=0))


def row(n, b_start, positions, labels, nsp):
    ids = np.arange(10, 10 + n, dtype=np.uint16)
    types = (np.arange(n) >= b_start).astype(np.int8)
    return {"input_ids": ids, "token_type_ids": types, "masked_lm_positions": np.array(positions, np.uint16),
            "masked_lm_labels": np.array(labels, np.uint16), "next_sentence_label": nsp}


def test_collator_pads_and_omits_the_mask_when_nothing_is_padded():
    c = Collator(Layout(pad_id=0, max_predictions=3))
    out = c((unpacked([0, 1]), [row(6, 3, [1, 4], [7, 8], 0), row(4, 2, [2], [9], 1)]))
    batch = out["inputs"]
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"][1, 4:].tolist() == [0, 0]
    assert batch["sequence_ids"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch["cu_seqlens"].tolist() == [0, 6, 10, 12, 12]  # row 0; row 1 and its padding; unused
    assert batch["masked_lm_positions"].tolist() == [[1, 4, 0], [2, 0, 0]]
    assert batch["masked_lm_labels"].tolist() == [[7, 8, -100], [9, -100, -100]]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["next_sentence_label"].tolist() == [0, 1] and out["counts"]["real_tokens"] == 10
    assert batch["position_ids"] is None and batch["cls_positions"] is None
    same = c((unpacked([0, 1]), [row(5, 2, [1], [3], 0), row(5, 3, [2], [4], 0)]))["inputs"]
    assert same["sequence_ids"] is None and same["cu_seqlens"] is None and same["input_ids"].dtype == torch.long


def test_collator_packs_each_sequence_as_its_own_bert_input():
    from pretrain.data import MicroBatch

    c = Collator(Layout(pad_id=0, max_predictions=3, rows=3, capacity=10, max_per_row=3))
    plan = MicroBatch(((0, 0), (1, 0), (2, 0)), (0, 0, 1), 0, 0, 0, 1, 4, 3)
    out = c((plan, [row(6, 3, [1, 4], [7, 8], 0), row(4, 2, [2], [9], 1), row(5, 2, [3], [5], 1)]))
    batch, counts = out["inputs"], out["counts"]
    assert batch["input_ids"].shape == (3, 10)  # fixed shape: the last row stays empty
    assert batch["input_ids"][0].tolist() == [10, 11, 12, 13, 14, 15, 10, 11, 12, 13]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    assert batch["sequence_ids"].tolist() == [[1] * 6 + [2] * 4, [1] * 5 + [0] * 5, [0] * 10]
    assert batch["cu_seqlens"].tolist() == [0, 6, 10, 15, 20, 30] + [30] * 7
    assert batch["masked_lm_positions"][0].tolist() == [1, 4, 8]  # the second sequence's shifted by 6
    assert batch["masked_lm_labels"][0].tolist() == [7, 8, 9]  # the row's slots, shared in order
    assert batch["masked_lm_labels"][1].tolist() == [5, -100, -100]
    assert batch["cls_positions"].tolist() == [[0, 6, 0], [0, 0, 0], [0, 0, 0]]
    assert batch["next_sentence_label"].tolist() == [[0, 1, -100], [1, -100, -100], [-100] * 3]
    assert (counts["capacity"], counts["rows_used"], counts["sequences"]) == (30, 2, 3)
    assert counts["attention_pairs"] == 36 + 16 + 25 and counts["predictions"] == 4


def packed_plan(world, rank, micro=4):
    return BatchPlan(rows=300, global_batch=32, micro_batch=micro, world_size=world, rank=rank, seed=5,
                     packing=True, capacity=64, max_per_row=3, max_predictions=12)


def test_packed_steps_are_the_same_at_any_world_size():
    """Places hold the same sequences at any world size; every rank runs the same number of micro-batches."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(8, 65, 300)
    predictions = rng.integers(1, 10, 300)

    def places(world):
        by_place, counts = {}, set()
        for rank in range(world):
            it = iter(StepSampler(packed_plan(world, rank), 0, lengths, predictions))
            for _ in range(16):  # steps 0 and 1 whole: fewer than 8 micro-batches each
                mb = next(it)
                counts.add((mb.step, mb.count))
                if mb.rows:
                    by_place[(mb.step, mb.place)] = (mb.rows, mb.slots)
                assert mb.sequences == 32 and mb.masked_tokens > 0
        return by_place, counts

    one, counts_1 = places(1)
    three, counts_3 = places(3)
    assert {k: v for k, v in one.items() if k[0] < 2} == {k: v for k, v in three.items() if k[0] < 2}
    assert all(c < 8 for _, c in counts_1)  # fewer micro-batches than unpacked's 32 / 4
    assert {s: -(-c // 3) for s, c in counts_1 if s < 2} == {s: c for s, c in counts_3 if s < 2}
    step0 = [i for (s, _), (rows, _) in one.items() if s == 0 for i, _ in rows]
    assert len(step0) == len(set(step0)) == 32
    assert sum(predictions[step0]) == next(iter(StepSampler(packed_plan(1, 0), 0, lengths, predictions))).masked_tokens


def test_length_bucketing_pads_less_and_still_takes_every_row_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 129, 400)
    plain = BatchPlan(rows=400, global_batch=16, micro_batch=8, world_size=2, rank=0, seed=4)
    bucketed = BatchPlan(rows=400, global_batch=16, micro_batch=8, world_size=2, rank=0, seed=4, bucket_window=5)

    def padding(plan):
        pad, seen = 0, []
        for rank in range(2):
            p = BatchPlan(**{**plan.__dict__, "rank": rank})
            assert p.accumulation == 1 and p.steps_per_epoch == 25
            for mb in take(StepSampler(p, lengths=lengths), 25):  # one epoch: 25 steps x 1 micro-batch
                pad += sum(lengths[mb].max() - lengths[mb])
                seen += mb
        return pad, seen

    pad_plain, seen_plain = padding(plain)
    pad_bucketed, seen_bucketed = padding(bucketed)
    assert sorted(seen_bucketed) == sorted(seen_plain) == list(range(400))  # every row once per epoch
    assert pad_bucketed < 0.3 * pad_plain
    full = take(StepSampler(bucketed, lengths=lengths), 60)  # crosses into the second epoch
    assert take(StepSampler(bucketed, start_step=7, lengths=lengths), 40) == full[7:47]  # resume by step


def test_dynamic_remasking_restores_originals_and_changes_masks_by_epoch(dataset):
    from preprocess.reader import PretrainingDataset
    from pretrain.data import Remasker, RowDataset

    data = PretrainingDataset(str(dataset))
    rows = RowDataset(data)
    remask = Remasker(data.info.tokens(), data.info.masking, seed=5)
    a = remask([rows[(i, 0)] for i in range(20)])
    again = remask([rows[(i, 0)] for i in range(20)])
    b = remask([rows[(i, 1)] for i in range(20)])
    changed = 0
    for i in range(20):
        original = data.original_ids(i)
        for r in (a[i], b[i]):
            ids = r["input_ids"].copy()
            ids[r["masked_lm_positions"]] = r["masked_lm_labels"]
            assert np.array_equal(ids, original)
            assert len(r["masked_lm_positions"]) == len(rows[(i, 0)]["masked_lm_positions"])  # same budget
        assert np.array_equal(a[i]["masked_lm_positions"], again[i]["masked_lm_positions"])  # keyed
        changed += not np.array_equal(a[i]["masked_lm_positions"], b[i]["masked_lm_positions"])
    assert changed >= 18
