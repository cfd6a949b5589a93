"""Training batches from the preprocessed Arrow shards.

The order of rows is a pure function of (seed, epoch): each epoch is a keyed
permutation of the split, cut into global batches of ``global_batch_size`` rows;
rank r of W takes the r-th W-th of every global batch, as ``accumulation``
micro-batches. So the position in the data is just the global step: a resumed run
starts its sampler at that step and reads the next row, with no skipping through
data, and every rank's slice is disjoint.

Options:

* **length bucketing** (``bucket_window`` = K steps): the rows of each window of K
  global batches are sorted by length and cut into K global batches again, whose
  order is shuffled (keyed by seed, epoch, window): every rank of a step gets rows
  of similar length, so less padding, and still each row once per epoch;
* **dynamic re-masking**: each row's original ids (input ids with the labels written
  back) are masked afresh, keyed by (seed, epoch, row), with the dataset's masking
  parameters, so every epoch sees new masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from preprocess.masking import MaskingParams, mask_batch
from preprocess.reader import PretrainingDataset, original_ids
from preprocess.rng import mix
from preprocess.tokenization import mask_vocab_of

IGNORE_INDEX = -100


@dataclass(frozen=True)
class BatchPlan:
    rows: int  # rows in the split
    global_batch: int
    micro_batch: int
    world_size: int
    rank: int
    seed: int
    bucket_window: int = 0  # steps per length-bucketing window; 0: off

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.micro_batch * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.rows // self.global_batch


class StepSampler:
    """Micro-batches of (row index, epoch) for one rank, starting at a global step."""

    def __init__(self, plan: BatchPlan, start_step: int = 0, lengths: np.ndarray | None = None):
        if plan.steps_per_epoch == 0:
            raise ValueError(f"{plan.rows} rows cannot fill one global batch of {plan.global_batch}")
        if plan.bucket_window and lengths is None:
            raise ValueError("length bucketing needs the rows' lengths")
        self.plan = plan
        self.start_step = start_step
        self.lengths = lengths

    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.plan.seed, epoch]).permutation(self.plan.rows)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The epoch's rows in step order: global batch s is ``order[s*G:(s+1)*G]``."""
        p = self.plan
        order = self.permutation(epoch)[: p.steps_per_epoch * p.global_batch]
        if not p.bucket_window:
            return order
        windows = []
        for w, lo in enumerate(range(0, len(order), p.bucket_window * p.global_batch)):
            rows = order[lo : lo + p.bucket_window * p.global_batch]
            rows = rows[np.argsort(self.lengths[rows], kind="stable")]  # similar lengths side by side
            steps = rows.reshape(-1, p.global_batch)
            shuffle = np.random.default_rng([p.seed, epoch, w + 1]).permutation(len(steps))
            windows.append(steps[shuffle].reshape(-1))
        return np.concatenate(windows)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        p = self.plan
        share = p.global_batch // p.world_size
        step = self.start_step
        while True:
            epoch, in_epoch = divmod(step, p.steps_per_epoch)
            order = self.epoch_order(epoch)
            for s in range(in_epoch, p.steps_per_epoch):
                base = s * p.global_batch + p.rank * share
                for a in range(p.accumulation):
                    rows = order[base + a * p.micro_batch : base + (a + 1) * p.micro_batch]
                    yield [(int(i), epoch) for i in rows]
            step = (epoch + 1) * p.steps_per_epoch


class RowDataset(Dataset):
    """Map-style view of a split; workers share the memory-mapped shards.

    Takes a row index or a (row index, epoch) pair; the row carries both."""

    def __init__(self, data: PretrainingDataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[int | tuple[int, int]]) -> list[dict]:
        """A micro-batch's rows in one call (the DataLoader's batched fetch), verified together."""
        pairs = [item if isinstance(item, tuple) else (item, 0) for item in items]
        rows = self.data.rows([i for i, _ in pairs])
        return [{**row, "index": i, "epoch": epoch} for row, (i, epoch) in zip(rows, pairs)]


class Remasker:
    """Fresh masks for each (row, epoch), with the dataset's own masking parameters."""

    def __init__(self, tokens: list[str], params: MaskingParams, seed: int):
        self.params = params
        self.vocab = mask_vocab_of(tokens)
        self.seed = seed

    def __call__(self, rows: list[dict]) -> list[dict]:
        originals = [original_ids(r) for r in rows]
        lengths = np.array([len(x) for x in originals])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        b_starts = np.array([int(np.argmax(r["token_type_ids"])) for r in rows])
        keys = mix(self.seed, np.array([r["epoch"] for r in rows], dtype=np.uint64),
                   np.array([r["index"] for r in rows], dtype=np.uint64))
        out = mask_batch(np.concatenate(originals).astype(np.int64), offsets, b_starts, keys, self.params, self.vocab)
        fresh = []
        for k, r in enumerate(rows):
            lo, hi = out.label_offsets[k], out.label_offsets[k + 1]
            fresh.append({**r, "input_ids": out.input_ids[offsets[k] : offsets[k + 1]],
                          "masked_lm_positions": out.positions[lo:hi], "masked_lm_labels": out.labels[lo:hi]})
        return fresh


class Collator:
    """Rows -> padded tensors; ``attention_mask`` is None when no row needs padding."""

    def __init__(self, pad_id: int, max_predictions: int, remasker: Remasker | None = None):
        self.pad_id = pad_id
        self.max_predictions = max_predictions
        self.remasker = remasker

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor | int | None]:
        if self.remasker is not None:
            rows = self.remasker(rows)
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
            "real_tokens": sum(lengths),  # an int: counting tokens never touches a tensor
        }


def collator_for(data: PretrainingDataset, remasker: Remasker | None = None) -> Collator:
    """Pads with the dataset's [PAD] and to its prediction budget."""
    return Collator(data.info.token_id("[PAD]"), data.info.max_predictions_per_seq, remasker)


def make_loader(
    data: PretrainingDataset, plan: BatchPlan, start_step: int, num_workers: int, dynamic_masking: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """The rank's micro-batches from global step ``start_step`` on (see :class:`StepSampler`);
    ``pin_memory`` (on GPU): batches in page-locked memory, so their copies to the device do not block."""
    remasker = Remasker(data.info.tokens(), data.info.masking, plan.seed) if dynamic_masking else None
    lengths = data.lengths() if plan.bucket_window else None
    return DataLoader(
        RowDataset(data),
        batch_sampler=StepSampler(plan, start_step, lengths),
        collate_fn=collator_for(data, remasker),
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
