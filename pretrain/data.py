"""Training batches from the preprocessed Arrow shards.

The order of rows is a pure function of (seed, epoch): each epoch is a keyed
permutation of the split, cut into global batches of ``global_batch_size`` rows;
rank r of W takes the r-th W-th of every global batch, as ``accumulation``
micro-batches. So the position in the data is just the global step: a resumed run
starts its sampler at that step and reads the next row, with no skipping through
data, and every rank's slice is disjoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from preprocess.reader import PretrainingDataset

IGNORE_INDEX = -100


@dataclass(frozen=True)
class BatchPlan:
    rows: int  # rows in the split
    global_batch: int
    micro_batch: int
    world_size: int
    rank: int
    seed: int

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.rows // self.global_batch


class StepSampler:
    """Micro-batches of row indices for one rank, starting at a global step."""

    def __init__(self, plan: BatchPlan, start_step: int = 0):
        if plan.steps_per_epoch == 0:
            raise ValueError(f"{plan.rows} rows cannot fill one global batch of {plan.global_batch}")
        self.plan = plan
        self.start_step = start_step

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.plan.seed, epoch]).permutation(self.plan.rows)

    def __iter__(self) -> Iterator[list[int]]:
        p = self.plan
        share = p.global_batch // p.world_size
        step = self.start_step
        while True:
            epoch, in_epoch = divmod(step, p.steps_per_epoch)
            perm = self.permutation(epoch)
            for s in range(in_epoch, p.steps_per_epoch):
                base = s * p.global_batch + p.rank * share
                for a in range(p.accumulation):
                    yield perm[base + a * p.micro_batch : base + (a + 1) * p.micro_batch].tolist()
            step = (epoch + 1) * p.steps_per_epoch


class RowDataset(Dataset):
    """Map-style view of a split; workers share the memory-mapped shards."""

    def __init__(self, data: PretrainingDataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        return self.data[i]


class Collator:
    """Rows -> padded tensors; ``attention_mask`` is None when no row needs padding."""

    def __init__(self, pad_id: int, max_predictions: int):
        self.pad_id = pad_id
        self.max_predictions = max_predictions

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor | None]:
        b = len(rows)
        lengths = [len(r["input_ids"]) for r in rows]
        s = max(lengths)
        ids = np.full((b, s), self.pad_id, dtype=np.int64)
        types = np.zeros((b, s), dtype=np.int64)
        positions = np.zeros((b, self.max_predictions), dtype=np.int64)
        labels = np.full((b, self.max_predictions), IGNORE_INDEX, dtype=np.int64)
        for i, r in enumerate(rows):
            n, k = lengths[i], len(r["masked_lm_positions"])
            ids[i, :n] = r["input_ids"]
            types[i, :n] = r["token_type_ids"]
            positions[i, :k] = r["masked_lm_positions"]
            labels[i, :k] = r["masked_lm_labels"]
        mask = None
        if min(lengths) != s:
            mask = torch.from_numpy((np.arange(s)[None, :] < np.array(lengths)[:, None]).astype(np.int64))
        return {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(types),
            "attention_mask": mask,
            "masked_lm_positions": torch.from_numpy(positions),
            "masked_lm_labels": torch.from_numpy(labels),
            "next_sentence_label": torch.tensor([r["next_sentence_label"] for r in rows], dtype=torch.long),
            "real_tokens": torch.tensor(sum(lengths)),
        }


def make_loader(data: PretrainingDataset, plan: BatchPlan, start_step: int, num_workers: int) -> DataLoader:
    max_predictions = int(data.config["max_predictions_per_seq"])
    tokens = _load_tokens(data)
    return DataLoader(
        RowDataset(data),
        batch_sampler=StepSampler(plan, start_step),
        collate_fn=Collator(tokens.index("[PAD]"), max_predictions),
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )


def _load_tokens(data: PretrainingDataset) -> list[str]:
    from preprocess.report import load_tokens

    return load_tokens(data.path, data.vocab)
