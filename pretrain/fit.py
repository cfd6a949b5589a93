"""``data.micro_batch_size: auto``: the largest micro-batch whose training step fits the GPU's memory.

Resolved once per run, before training, and recorded in the run directory
(:attr:`pretrain.run_dir.RunDir.micro_batch_file`); a resumed run reuses the record (at
another world size, the largest valid size not above it), so a run keeps its micro-batch.

How it is measured: a throwaway DeepSpeed engine, built exactly as the run's (ZeRO stage,
precision, optimizer, activation checkpointing, world size) around a fresh copy of the model
on the GPU, steps synthetic worst-case micro-batches (every row full: one sequence of
``max_seq_length``, or packed with ``max_sequences_per_row`` sequences; every prediction slot
used) and reads the peak of allocated memory of each step's forward and backward, the highest over
the ranks (the update's peak, which does not grow with the rows, is checked apart). After one
step unmeasured (what is allocated once: optimizer states, buffers), that peak grows linearly with
the rows, so two small trials predict the largest size under the budget
(``data.auto_memory_fraction`` of the card: the rest is margin for the allocator's fragmentation,
CUDA's context and NCCL's buffers), and further trials confirm it or close in on it
(:func:`largest_fitting`). Sizes are those the batch arithmetic allows
(:func:`pretrain.config.micro_batch_sizes`). The
trials run eager: a compiled model needs less, so the choice stays safe with ``model.compile``.
The probe engine, its model and optimizer states are released before the run's engine is
built; the torch RNG state is restored, so the run is the same as with the size given by hand.
"""

from __future__ import annotations

import gc
import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from pretrain.config import ConfigError, TrainConfig, micro_batch_sizes
from pretrain.data import Collator, Layout, MicroBatch, layout_for
from pretrain.engine import build_engine
from pretrain.model import build_model, set_activation_checkpointing

if TYPE_CHECKING:
    from preprocess.dataset import DatasetInfo
    from pretrain.distributed import World
    from pretrain.model_config import BertConfig
    from pretrain.run_dir import RunDir

log = logging.getLogger("pretrain")


GROWTH = 8  # a trial is at most this many times the largest size known to fit (a flat start predicts nothing)


def largest_fitting(peak: Callable[[int], float], budget: float, allowed: list[int],
                    max_trials: int = 10) -> tuple[int, dict[int, float]]:
    """The largest of ``allowed`` (ascending) whose ``peak(size)`` is within ``budget``, and every trial's
    peak. Trials: the smallest size, then the first of at least twice it; then, while trials are left,
    the largest size that the line through the two measured sizes nearest the budget (the largest that
    fits and the smallest over, or the two largest that fit) predicts within the budget, if it is above
    the largest that fits and below the smallest over; between a size that fits and one over, at least
    the size halfway between them (a peak growing faster than linearly would otherwise be approached
    in small steps); never more than :data:`GROWTH` times the largest that fits. Exact in a few trials
    for a linear peak. Raises :class:`ConfigError` if the smallest does not fit."""
    peaks: dict[int, float] = {}
    first = allowed[0]
    peaks[first] = peak(first)
    if peaks[first] > budget:
        raise ConfigError(f"data.micro_batch_size auto: even {first} row(s) a micro-batch peak at "
                          f"{peaks[first] / 2**30:.1f} GB, over the budget of {budget / 2**30:.1f} GB: use ZeRO-3, "
                          "model.activation_checkpointing or deepspeed.offload_optimizer")
    second = next((m for m in allowed if m >= 2 * first), None)
    if second is None:
        return first, peaks
    peaks[second] = peak(second)
    while len(peaks) < max_trials:
        fit = max(m for m, p in peaks.items() if p <= budget)
        over = min((m for m, p in peaks.items() if p > budget), default=None)
        other = over if over is not None else max(m for m, p in peaks.items() if p <= budget and m < fit)
        slope = (peaks[other] - peaks[fit]) / (other - fit)
        reach = min(fit + (budget - peaks[fit]) / slope if slope > 0 else math.inf, GROWTH * fit)
        nxt = max((m for m in allowed if fit < m <= reach and (over is None or m < over)), default=None)
        if over is not None:
            between = [m for m in allowed if fit < m < over]
            if not between:
                break
            nxt = max(nxt or 0, between[(len(between) - 1) // 2])
        if nxt is None or nxt in peaks:
            break
        peaks[nxt] = peak(nxt)
    return max(m for m, p in peaks.items() if p <= budget), peaks


def worst_case_rows(m: int, info: DatasetInfo, layout: Layout) -> tuple[MicroBatch, list[dict]]:
    """``m`` batch rows as full as the data can make them, every prediction slot used: packed, each row
    ``max_per_row`` sequences filling it; else one sequence a row of ``max_seq_length`` (the last one
    token shorter, so the batch takes the padded rows' attention path, as training batches do)."""
    s, p = info.max_seq_length, layout.max_predictions
    k = max(1, min(layout.max_per_row, s // 8)) if layout.rows else 1
    per_row = [s // k] * (k - 1) + [s - (k - 1) * (s // k)]
    g = np.random.default_rng(0)
    rows, slots = [], []
    for r in range(m):
        lengths = per_row if layout.rows else [s - 1 if r == m - 1 else s]
        for j, n in enumerate(lengths):
            predictions = min(n - 2, p // len(lengths) + (j < p % len(lengths)))
            rows.append({"input_ids": g.integers(5, info.vocab_size, n),
                         "token_type_ids": (np.arange(n) >= n // 2).astype(np.int8),
                         "masked_lm_positions": np.arange(1, predictions + 1),
                         "masked_lm_labels": g.integers(5, info.vocab_size, predictions),
                         "next_sentence_label": j % 2})
            slots.append(r)
    n, masked = len(rows), sum(len(r["masked_lm_positions"]) for r in rows)
    return MicroBatch(tuple((i, 0) for i in range(n)), tuple(slots), 0, 0, 0, 1, masked, n), rows


class Probe:
    """A throwaway engine like the run's, on a fresh copy of the model, stepping worst-case micro-batches.
    :meth:`step` runs one training step (forward, backward, the optimizer's update) on ``m`` rows;
    :meth:`peak` measures one on a GPU. :meth:`close` releases everything it holds."""

    def __init__(self, cfg: TrainConfig, config: BertConfig, info: DatasetInfo, world: World):
        self.info, self.world = info, world
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        model = build_model(config, device=self.device or "cpu")
        set_activation_checkpointing(model, cfg.model.activation_checkpointing)
        probe_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"micro_batch_size": 1})})
        self.engine = build_engine(probe_cfg, model, world.size)
        packed, most = cfg.data.packing, cfg.data.max_sequences_per_row
        self.layout = lambda m: layout_for(info, m, info.max_seq_length, most) if packed else layout_for(info)
        self.update_peak = 0.0  # bytes: the highest peak of the optimizer's update, over trials and ranks

    def step(self, m: int, between: Callable[[], None] = lambda: None) -> None:
        """One training step on ``m`` worst-case rows; ``between`` runs after the backward, before the update."""
        batch = Collator(self.layout(m))(worst_case_rows(m, self.info, self.layout(m)))["inputs"]
        batch = {k: (v.to(self.engine.device) if v is not None else None) for k, v in batch.items()}
        out = self.engine(**batch)
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.backward(out.mlm_loss_sum / batch["masked_lm_positions"].numel() + out.nsp_loss_sum / m,
                             scale_wrt_gas=False)
        between()
        self.engine.step()

    def peak(self, m: int) -> float:
        """Bytes: the highest peak of allocated GPU memory over the ranks during the forward and backward of
        a step on ``m`` rows: linear in ``m`` (the update's own peak does not depend on ``m``: it is kept
        apart, in :attr:`update_peak`, so that small trials still show the slope)."""
        peaks = []

        def read() -> None:
            torch.cuda.synchronize()
            peaks.append(float(torch.cuda.max_memory_allocated()))
            torch.cuda.reset_peak_memory_stats()

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        try:
            self.step(m, between=read)
        except torch.OutOfMemoryError as e:
            raise ConfigError(f"data.micro_batch_size auto: the trial with {m} rows ran out of memory (the "
                              "prediction from smaller trials was wrong): lower data.auto_memory_fraction or give "
                              "data.micro_batch_size") from e
        read()
        most = torch.tensor(peaks, dtype=torch.float64, device=self.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        forward_backward, update = most.tolist()
        self.update_peak = max(self.update_peak, update)
        return forward_backward

    def close(self) -> None:
        if hasattr(self.engine, "destroy"):
            self.engine.destroy()
        self.engine = None
        gc.collect()
        if self.device is not None:
            torch.cuda.empty_cache()


def resolve(cfg: TrainConfig, config: BertConfig, info: DatasetInfo, world: World, run: RunDir) -> TrainConfig:
    """``cfg`` with ``data.micro_batch_size`` a number: the run directory's record, else measured (every
    rank takes part; the ranks agree, as each trial's peak is their maximum) and recorded by rank 0."""
    allowed = micro_batch_sizes(cfg.deepspeed.global_batch_size, world.size, cfg.data.packing)
    record = json.loads(run.micro_batch_file.read_text()) if run.micro_batch_file.exists() else None
    if record is not None:
        m = max(s for s in allowed if s <= record["micro_batch_size"])
        log.info("data.micro_batch_size auto: %d rows, as measured at the run's start (%s)%s", m, record["device"],
                 "" if m == record["micro_batch_size"] else f"; {record['micro_batch_size']} does not divide the "
                 f"per-rank batch at {world.size} ranks")
    else:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        budget = cfg.data.auto_memory_fraction * props.total_memory
        probe = Probe(cfg, config, info, world)
        with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
            try:
                probe.step(allowed[0])  # what is allocated once (optimizer states, buffers) before measuring
                m, peaks = largest_fitting(probe.peak, budget, allowed)
            finally:
                probe.close()
                torch.cuda.reset_peak_memory_stats()  # the run's memory_gb is its own
        if probe.update_peak > budget:
            raise ConfigError(f"data.micro_batch_size auto: the optimizer's update alone peaks at "
                              f"{probe.update_peak / 2**30:.1f} GB, over the budget of {budget / 2**30:.1f} GB: use "
                              "ZeRO-2/3 or deepspeed.offload_optimizer")
        trials = ", ".join(f"{s}: {p / 2**30:.1f}" for s, p in sorted(peaks.items()))
        log.info("data.micro_batch_size auto: %d rows (forward and backward peak GB by rows %s; update %.1f; budget "
                 "%.1f GB of %s's %.1f)", m, trials, probe.update_peak / 2**30, budget / 2**30, props.name,
                 props.total_memory / 2**30)
        if world.rank == 0:
            run.micro_batch_file.write_text(json.dumps({
                "micro_batch_size": m, "device": props.name, "budget_gb": round(budget / 2**30, 2),
                "peaks_gb": {str(s): round(p / 2**30, 2) for s, p in sorted(peaks.items())},
                "update_peak_gb": round(probe.update_peak / 2**30, 2),
                "world_size": world.size, "zero_stage": cfg.deepspeed.zero_stage}, indent=1) + "\n")
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"micro_batch_size": m})})

