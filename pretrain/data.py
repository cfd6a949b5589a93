"""Training batches from the preprocessed Arrow shards.

The order of rows is a pure function of (seed, epoch): each epoch is a keyed
permutation of the split, cut into global batches of ``global_batch_size`` sequences;
rank r of W takes the r-th W-th of every global batch's micro-batches. So the position in
the data is just the global step: a resumed run starts its sampler at that step and reads
the next row, with no skipping through data, and every rank's slice is disjoint.

Each micro-batch carries the loss normalisers of its step, computed here on the host: the
masked positions and the sequences of the whole global batch. The trainer divides each
micro-batch's summed losses by them, so a step's loss is the mean over all masked tokens and
all sequences of the global batch however they are laid out (packed or not, at any world
size), with no device-to-host read and no collective.

Options:

* **packing** (``packing``): the sequences of each global batch are packed into rows of
  ``capacity`` tokens, at most ``max_per_row`` per row (:mod:`preprocess.packing`, best-fit
  decreasing over the whole global batch, in sampler order: the same on every rank and at any
  world size). ``micro_batch`` then counts rows, the global batch still counts sequences (so
  learning rates keep their meaning), and the number of micro-batches varies with the step:
  every rank runs the same number, the last ones possibly empty, each of the fixed shape
  (``micro_batch``, ``capacity``). Not combined with length bucketing;

* **length bucketing** (``bucket_window`` = K steps): the rows of each window of K
  global batches are sorted by length and cut into K global batches again, whose
  order is shuffled (keyed by seed, epoch, window): every rank of a step gets rows
  of similar length, so less padding, and still each row once per epoch;
* **dynamic re-masking**: each row's original ids (input ids with the labels written
  back) are masked afresh, keyed by (seed, epoch, row), with the dataset's masking
  parameters, so every epoch sees new masks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from preprocess.masking import MaskingParams, mask_batch, num_to_predict
from preprocess.packing import pack
from preprocess.reader import PretrainingDataset, original_ids
from preprocess.rng import mix
from preprocess.tokenization import mask_vocab_of

if TYPE_CHECKING:
    from preprocess.dataset import DatasetInfo

IGNORE_INDEX = -100


@dataclass(frozen=True)
class BatchPlan:
    rows: int  # rows in the split
    global_batch: int  # sequences per optimizer step
    micro_batch: int  # rows per micro-batch (packed: each row holds up to ``max_per_row`` sequences)
    world_size: int
    rank: int
    seed: int
    bucket_window: int = 0  # steps per length-bucketing window; 0: off
    packing: bool = False
    capacity: int = 0  # tokens per packed row (the dataset's max_seq_length)
    max_per_row: int = 3  # sequences per packed row at most
    max_predictions: int = 0  # masked positions per packed row at most (the dataset's max_predictions_per_seq)

    @property
    def accumulation(self) -> int:
        """Micro-batches per rank and step, unpacked (packed: per step, see :meth:`StepSampler.plan_step`)."""
        return self.global_batch // (self.micro_batch * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.rows // self.global_batch


@dataclass(frozen=True)
class MicroBatch:
    """One rank's micro-batch of one step, as the sampler plans it: host numbers only."""

    rows: tuple[tuple[int, int], ...]  # (row index, epoch) of each sequence, in layout order
    slots: tuple[int, ...]  # the batch row each sequence goes into (packed: several sequences per row)
    step: int
    place: int  # its place among the step's micro-batches, whatever the world size (seeds dropout)
    index: int  # 0 .. count-1 on this rank
    count: int  # this rank's micro-batches in this step: the same on every rank
    masked_tokens: int  # masked positions in the whole global batch: the MLM loss's normaliser
    sequences: int  # sequences in the whole global batch: the NSP loss's normaliser


class StepSampler:
    """:class:`MicroBatch` plans for one rank, step after step, from a global step on.

    A step's global batch (``global_batch`` sequences in sampler order) is cut into *units*:
    single sequences, or with packing the rows of :func:`preprocess.packing.pack` over the whole
    global batch. Micro-batch ``k`` of the step holds units ``k*m .. k*m+m-1``; each rank runs
    ``ceil(ceil(units / m) / world)`` micro-batches (the last ones possibly empty), rank ``r``
    those at places ``r*count ..``. So the packing and the content of every place are the same
    at any world size. ``lengths`` (rows,) are needed for packing and bucketing,
    ``predictions`` (rows,) masked positions per row for the loss normalisers.
    """

    def __init__(self, plan: BatchPlan, start_step: int = 0, lengths: np.ndarray | None = None,
                 predictions: np.ndarray | None = None):
        if plan.steps_per_epoch == 0:
            raise ValueError(f"{plan.rows} rows cannot fill one global batch of {plan.global_batch}")
        if (plan.bucket_window or plan.packing) and lengths is None:
            raise ValueError("length bucketing and packing need the rows' lengths")
        if plan.packing and predictions is None:
            raise ValueError("packing needs the rows' masked positions")
        self.plan = plan
        self.start_step = start_step
        self.lengths = lengths
        self.predictions = predictions

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

    def plan_step(self, step: int, rows: np.ndarray, epoch: int) -> list[MicroBatch]:
        """This rank's micro-batches of global step ``step``, whose sequences are ``rows``."""
        p = self.plan
        masked = int(self.predictions[rows].sum()) if self.predictions is not None else 0
        if p.packing:  # rows of several sequences
            units = [rows[u] for u in pack(self.lengths[rows], p.capacity, p.max_per_row, self.predictions[rows],
                                           p.max_predictions)]
        else:  # a sequence a row
            units = rows[:, None]
        count = math.ceil(math.ceil(len(units) / p.micro_batch) / p.world_size)  # the same on every rank
        out = []
        for a in range(count):
            place = p.rank * count + a
            mine = units[place * p.micro_batch : (place + 1) * p.micro_batch]
            out.append(MicroBatch(
                rows=tuple((int(i), epoch) for unit in mine for i in unit),
                slots=tuple(slot for slot, unit in enumerate(mine) for _ in unit),
                step=step, place=place, index=a, count=count, masked_tokens=masked, sequences=len(rows),
            ))
        return out

    def __iter__(self) -> Iterator[MicroBatch]:
        p = self.plan
        step = self.start_step
        while True:
            epoch, in_epoch = divmod(step, p.steps_per_epoch)
            order = self.epoch_order(epoch)
            for s in range(in_epoch, p.steps_per_epoch):
                yield from self.plan_step(epoch * p.steps_per_epoch + s,
                                          order[s * p.global_batch : (s + 1) * p.global_batch], epoch)
            step = (epoch + 1) * p.steps_per_epoch


def unpacked(rows: list[int]) -> MicroBatch:
    """A micro-batch of ``rows``, one per batch row (evaluation)."""
    return MicroBatch(tuple((i, 0) for i in rows), tuple(range(len(rows))), 0, 0, 0, 1, 0, len(rows))


class RowDataset(Dataset):
    """Map-style view of a split; workers share the memory-mapped shards.

    Takes a row index, a (row index, epoch) pair, or a whole :class:`MicroBatch` (the loader's
    batched fetch: its rows in one call, verified together, returned with the plan)."""

    def __init__(self, data: PretrainingDataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[int | tuple[int, int]] | MicroBatch) -> list[dict] | tuple[MicroBatch, list[dict]]:
        if isinstance(items, MicroBatch):
            return items, self.__getitems__(list(items.rows))
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


@dataclass(frozen=True)
class Layout:
    """How the collator lays sequences out: one per row (padded to the longest), or packed."""

    pad_id: int
    max_predictions: int  # prediction slots per row (packed rows share theirs)
    rows: int = 0  # packed: rows per micro-batch (fixed shape); 0: one sequence per row
    capacity: int = 0  # packed: tokens per row
    max_per_row: int = 1


class Collator:
    """A planned micro-batch's rows -> tensors for the model, and host counts for the trainer.

    Every sequence keeps exactly its BERT input wherever it lies: tokens and token types at an
    offset in its row, position ids from 0, masked positions shifted with it, its own [CLS]
    (``cls_positions``) and NSP label. A row's prediction slots (``max_predictions``) are shared
    by its sequences, in order (packing keeps their sum within it). ``sequence_ids`` (B, S)
    number the sequences of a row from 1 (0: padding) and ``cu_seqlens`` (B*(K+1)+1,) int32 are
    the boundaries of every
    sequence and every row's padding in the flattened B*S tokens, padded with zero-length
    entries to a fixed size (what :mod:`pretrain.attention` needs to keep sequences apart). A
    batch of full rows of one sequence each gets neither (no mask: the fastest kernels). One
    sequence per row: ``position_ids`` and ``cls_positions`` are None and
    ``next_sentence_label`` is (B,); packed: (B, K) with -100 in empty slots.
    """

    def __init__(self, layout: Layout, remasker: Remasker | None = None):
        self.layout = layout
        self.remasker = remasker

    def __call__(self, fetched: tuple[MicroBatch, list[dict]]) -> dict:
        """``{"inputs": the model's keyword arguments (tensors or None), "plan": the MicroBatch, "counts": host
        ints, see pretrain.metrics.COUNTS}``: the counts are never tensors, so reading them never waits for the
        device."""
        plan, rows = fetched
        if self.remasker is not None and rows:
            rows = self.remasker(rows)
        lay = self.layout
        packed = lay.rows > 0
        lengths = [len(r["input_ids"]) for r in rows]
        b = lay.rows if packed else len(rows)
        s = lay.capacity if packed else max(lengths)
        k = lay.max_per_row if packed else 1
        p = lay.max_predictions
        ids = np.full((b, s), lay.pad_id, dtype=np.int64)
        types = np.zeros((b, s), dtype=np.int64)
        position_ids = np.zeros((b, s), dtype=np.int64)
        sequence_ids = np.zeros((b, s), dtype=np.int64)
        positions = np.zeros((b, p), dtype=np.int64)
        labels = np.full((b, p), IGNORE_INDEX, dtype=np.int64)
        cls = np.zeros((b, k), dtype=np.int64)
        nsp = np.full((b, k), IGNORE_INDEX, dtype=np.int64)
        fill = np.zeros(b, dtype=np.int64)  # tokens placed in each row so far
        predicted = np.zeros(b, dtype=np.int64)  # prediction slots used in each row so far
        chunks: list[list[int]] = [[] for _ in range(b)]  # each row's sequence lengths, then its padding
        for r, slot, n in zip(rows, plan.slots, lengths):
            at, j, q = int(fill[slot]), len(chunks[slot]), int(predicted[slot])
            m = len(r["masked_lm_positions"])
            if at + n > s or j >= k or q + m > p:
                raise ValueError(f"micro-batch of step {plan.step}: row {slot} cannot hold its sequences")
            ids[slot, at : at + n] = r["input_ids"]
            types[slot, at : at + n] = r["token_type_ids"]
            position_ids[slot, at : at + n] = np.arange(n)
            sequence_ids[slot, at : at + n] = j + 1
            positions[slot, q : q + m] = np.asarray(r["masked_lm_positions"], dtype=np.int64) + at
            labels[slot, q : q + m] = r["masked_lm_labels"]
            cls[slot, j], nsp[slot, j] = at, r["next_sentence_label"]
            fill[slot] += n
            predicted[slot] += m
            chunks[slot].append(n)
        full = not packed and min(lengths) == s
        cu = None
        if not full:
            bounds = [n for row, used in zip(chunks, fill.tolist()) for n in (*row, *([s - used] if used < s else []))]
            cu = np.zeros(b * (k + 1) + 1, dtype=np.int32)
            cu[1 : len(bounds) + 1] = np.cumsum(bounds)
            cu[len(bounds) + 1 :] = b * s
        t = torch.from_numpy
        inputs = {
            "input_ids": t(ids),
            "token_type_ids": t(types),
            "position_ids": t(position_ids) if packed else None,
            "sequence_ids": None if full else t(sequence_ids),
            "cu_seqlens": None if cu is None else t(cu),
            "cls_positions": t(cls) if packed else None,
            "masked_lm_positions": t(positions),
            "masked_lm_labels": t(labels),
            "next_sentence_label": t(nsp) if packed else t(nsp[:, 0]),
        }
        counts = {
            "real_tokens": sum(lengths),
            "attention_pairs": sum(n * n for n in lengths),
            "predictions": sum(len(r["masked_lm_positions"]) for r in rows),
            "capacity": b * s,
            "rows_used": int(np.count_nonzero(fill)),
            "sequences": len(rows),
        }
        return {"inputs": inputs, "plan": plan, "counts": counts}


def layout_for(info: DatasetInfo, packed_rows: int = 0, capacity: int = 0, max_per_row: int = 1) -> Layout:
    """A dataset's layout: padded with its [PAD], its prediction budget a row; packed into ``packed_rows``
    rows of ``capacity`` tokens, at most ``max_per_row`` sequences each, when ``packed_rows`` > 0."""
    return Layout(info.token_id("[PAD]"), info.max_predictions_per_seq, packed_rows, capacity,
                  max_per_row if packed_rows else 1)


def collator_for(data: PretrainingDataset, plan: BatchPlan | None = None, remasker: Remasker | None = None) -> Collator:
    """Pads with the dataset's [PAD] and to its prediction budget; packs when ``plan`` says so."""
    if plan is not None and plan.packing:
        return Collator(layout_for(data.info, plan.micro_batch, plan.capacity, plan.max_per_row), remasker)
    return Collator(layout_for(data.info), remasker)


def predictions_per_row(data: PretrainingDataset, dynamic_masking: bool, lengths: np.ndarray | None = None) -> np.ndarray:
    """(rows,) masked positions of every row: stored (static masking), or the budget dynamic masking draws
    (:func:`preprocess.masking.num_to_predict` of the rows' ``lengths``: exact without whole-word masking, an
    upper bound with it)."""
    if dynamic_masking:
        lengths = data.lengths(np.uint16) if lengths is None else lengths
        return num_to_predict(lengths.astype(np.int32), data.info.masking).astype(np.uint16)
    return data.prediction_counts(np.uint16)


def make_loader(
    data: PretrainingDataset, plan: BatchPlan, start_step: int, num_workers: int, dynamic_masking: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """The rank's micro-batches from global step ``start_step`` on (see :class:`StepSampler`);
    ``pin_memory`` (on GPU): batches in page-locked memory, so their copies to the device do not block."""
    remasker = Remasker(data.info.tokens(), data.info.masking, plan.seed) if dynamic_masking else None
    needs_lengths = plan.bucket_window or plan.packing or dynamic_masking
    lengths = data.lengths(np.uint16) if needs_lengths else None  # read once, from the offsets
    predictions = predictions_per_row(data, dynamic_masking, lengths)
    sampler = StepSampler(plan, start_step, lengths, predictions)
    return DataLoader(
        RowDataset(data),
        batch_sampler=sampler,
        collate_fn=collator_for(data, plan, remasker),
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        pin_memory=pin_memory,
    )
