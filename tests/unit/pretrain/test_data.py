import numpy as np
import pytest
import torch

from pretrain.data import BatchPlan, Collator, StepSampler


def take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


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
    assert batch["next_sentence_label"].tolist() == [0, 1] and int(batch["real_tokens"]) == 10
    same = c([row(5, 2, [1], [3], 0), row(5, 3, [2], [4], 0)])
    assert same["attention_mask"] is None and same["input_ids"].dtype == torch.long
