import numpy as np
import pytest
import torch

from pretrain.data import BatchPlan, Collator, StepSampler


def take(sampler, n):
    """The first n micro-batches as row indices (the sampler also carries each row's epoch)."""
    it = iter(sampler)
    return [[i for i, _ in next(it)] for _ in range(n)]


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
    c = Collator(pad_id=0, max_predictions=3)
    batch = c([row(6, 3, [1, 4], [7, 8], 0), row(4, 2, [2], [9], 1)])
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"][1, 4:].tolist() == [0, 0]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch["masked_lm_positions"].tolist() == [[1, 4, 0], [2, 0, 0]]
    assert batch["masked_lm_labels"].tolist() == [[7, 8, -100], [9, -100, -100]]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1, 1]
    assert batch["next_sentence_label"].tolist() == [0, 1] and batch["real_tokens"] == 10
    same = c([row(5, 2, [1], [3], 0), row(5, 3, [2], [4], 0)])
    assert same["attention_mask"] is None and same["input_ids"].dtype == torch.long


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
