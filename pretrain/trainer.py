"""The training loop: ``Trainer.train()`` -> ``train_step()`` -> ``forward_backward()``.

The trainer is handed its collaborators (the engine, the batches, checkpoints,
evaluation, metrics, the stop signal) and only sequences them; :mod:`pretrain.run`
builds them from the configuration.

Everything random in a step is a function of the seed, the step and the micro-batch's
place in the global batch, never of the rank: the data order and packing (:mod:`pretrain.data`:
rank ``r`` of ``W`` takes micro-batches ``r*A .. r*A+A-1`` of the step's ``W*A``, ``A`` planned
by the loader per step) and the dropout masks (the torch generator is re-seeded for each
micro-batch by its place). So a run resumed from a checkpoint repeats exactly the losses of an
uninterrupted run, the
same global batch gives the same losses at any world size (up to the order of the
gradient sums), and nothing in the loop needs to skip through data.

A step's losses and counts stay on the device: they are reduced over ranks and read
by the host only at logging steps. A stop signal (SIGTERM, SIGUSR1) is agreed on by the ranks
every ``STOP_CHECK_EVERY`` steps, so it is honoured within that many steps. A NaN or infinite loss is recorded on the device
with its step and reported (:class:`NonFiniteLoss`) at the next logging step or
before the next checkpoint, whichever comes first, so no checkpoint holds it. Such a bad step (or
a spike, or a stuck fp16 loss scale: :mod:`pretrain.guard`) is rolled back: the newest checkpoint
is reloaded, the step's global batch is skipped and training goes on (:meth:`Trainer.roll_back`);
with ``train.on_nonfinite: stop`` it ends the run instead.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from preprocess.rng import mix_int
from pretrain.checkpoint import CheckpointManager
from pretrain.distributed import StopSignal
from pretrain.engine import grad_norm
from pretrain.evaluation import Evaluator
from pretrain.guard import BadStep, RollbackBudget, RollbackFailed, ScaleRule, SpikeRule
from pretrain.metrics import COUNTS, DeviceTimer, HostSyncs, Interval, MetricsLogger, memory_gb

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

    from pretrain.data import MicroBatch

log = logging.getLogger("pretrain")

# The sums a step keeps per rank, in this order (device tensor, float64).
SUMS = ("mlm_loss_sum", "nsp_loss_sum", "mlm_correct", "mlm_total", "nsp_correct", "nsp_total")
# A stop signal is agreed on (a collective and a host read) every this many steps, not every step.
STOP_CHECK_EVERY = 10
_NO_BAD_STEP = 2.0**52  # the non-finite tracker holds _NO_BAD_STEP - step, so a MAX over ranks finds the first


class NonFiniteLoss(BadStep):
    """The loss became NaN or infinite; the message names the step."""


@dataclass(frozen=True)
class Guard:
    """What a bad step does (``train`` section): roll back or stop, and the rules that find one."""

    rollback: bool = True
    max_rollbacks: int = 3
    rollback_window: int = 1000
    spike_factor: float = 0.0
    spike_window: int = 100
    fp16_min_scale_steps: int = 0
    fp16_min_scale: float = 1.0
    skip_steps: frozenset[int] = frozenset()
    inject_nonfinite_at: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Loop:
    """The numbers the loop needs, resolved from the configuration, the data and the world."""

    last_step: int  # where this job stops (``stop_at_step``, or the schedule's end)
    total_steps: int  # the schedule's end: reaching it finishes the run
    log_every: int
    checkpoint_every: int
    eval_every: int  # 0: no evaluation
    seed: int
    rank: int
    world_size: int
    global_batch: int
    flops: Callable[[int, int, int], float]  # (real tokens, attention pairs, predictions) -> training FLOPs
    peak_tflops: float = 0.0
    fp16: bool = False
    count_host_syncs: bool = False  # on a GPU: CUDA's count of synchronisations in the step, logged
    guard: Guard = Guard()


class Trainer:
    def __init__(self, engine: DeepSpeedEngine, batches: Callable[[int], Iterator[dict]], loop: Loop,
                 checkpoints: CheckpointManager, metrics: MetricsLogger, evaluator: Evaluator | None, stop: StopSignal):
        """``batches(step)``: the loader's micro-batches from step ``step + 1`` on (again after a roll-back)."""
        self.engine, self.make_batches, self.loop = engine, batches, loop
        self.batches: Iterator[dict] = iter(())
        guard = loop.guard
        self.spikes = SpikeRule(guard.spike_factor, guard.spike_window)
        self.scale = ScaleRule(guard.fp16_min_scale_steps if loop.fp16 else 0, guard.fp16_min_scale)
        self.budget = RollbackBudget(guard.max_rollbacks, guard.rollback_window)
        self.skips: dict[int, str] = dict.fromkeys(sorted(guard.skip_steps), "train.skip_steps")
        self.checkpoints, self.metrics, self.evaluator, self.stop = checkpoints, metrics, evaluator, stop
        self.device = engine.device
        self.bad = torch.zeros((), dtype=torch.float64, device=self.device)  # see _NO_BAD_STEP
        # DeepSpeed reports the gradient norm from its ZeRO and mixed-precision optimizers only;
        # at ZeRO-0 in fp32 the trainer measures it itself, at logging steps.
        self.own_grad_norm = engine.zero_optimization_stage() == 0 and not (
            engine.bfloat16_enabled() or engine.fp16_enabled())
        self.grad_norm: torch.Tensor | None = None
        self.optimizer_time = DeviceTimer(self.device)  # engine.step() at the step's last micro-batch
        self.syncs = HostSyncs() if loop.count_host_syncs and torch.device(self.device).type == "cuda" else None

    def train(self, state: dict) -> dict:
        """Train from ``state`` (step, samples, skipped steps) to ``loop.last_step``; the final state."""
        loop = self.loop
        step = state_at_start = state["step"]
        self.skips.update({int(k): v for k, v in state.get("skipped", {}).items()})
        self.open_batches(step)
        interval = Interval()
        while step < loop.last_step:
            logging_step = (step + 1) % loop.log_every == 0 or step + 1 == loop.last_step
            skipped = step + 1 in self.skips
            if skipped:
                self.skip_step(step)
            else:
                with self.syncs.counting() if self.syncs else contextlib.nullcontext():
                    sums, counts, waited = self.train_step(step, measure_grad_norm=logging_step and self.own_grad_norm)
            step += 1
            self.metrics.tick(step)
            state = {"step": step, "samples": state["samples"] + loop.global_batch, "skipped": self.skipped()}
            try:
                if skipped:
                    self.metrics.log(step, self.skip_record(step))
                else:
                    self._track_finite(sums[0] + sums[1], step)
                    interval.add(counts, waited)
                    if step == state_at_start + 1 and not logging_step:
                        interval = Interval()  # the process's first step (compilation, lazy set-up) is not throughput
                        self.optimizer_time.reset()
                        if self.syncs:
                            self.syncs.read()
                    if self.scale.steps and self.scale.stuck(float(self.engine.optimizer.loss_scale)):
                        raise BadStep(step, f"the fp16 loss scale at its minimum for {self.scale.steps} steps")
                    if logging_step:
                        self.log(step, sums, interval, state)
                        interval = Interval()
                if self.evaluator and (step % loop.eval_every == 0 or step == loop.last_step):
                    self.metrics.log(step, self.evaluator.run(self.engine))
                stopping = step % STOP_CHECK_EVERY == 0 and self.stop.agreed()
                if step % loop.checkpoint_every == 0 or step == loop.last_step or stopping:
                    self.check_finite()
                    self.checkpoints.save(self.engine, state)
            except BadStep as bad:
                if not loop.guard.rollback:
                    raise
                state = self.roll_back(bad)
                step, interval = state["step"], Interval()
                continue
            if stopping:
                log.warning("signal %s: checkpointed at step %d, stopping", self.stop.received, step)
                break
        return state

    def open_batches(self, step: int) -> None:
        """The loader, from step ``step + 1`` on (set-up: its workers start, its plan is made)."""
        self.batches = self.make_batches(step)

    def skipped(self) -> dict[str, str]:
        """The steps skipped so far or to be, with why (kept in checkpoints: a resumed run skips them too)."""
        return {str(k): v for k, v in sorted(self.skips.items())}

    def skip_step(self, step: int) -> None:
        """Step ``step + 1`` is skipped: its micro-batches are drawn (the data order stays that of every
        other run) and not trained on; the learning-rate schedule moves on as if it had been."""
        while True:
            plan = next(self.batches)["plan"]
            if plan.step != step:
                raise RuntimeError(f"the loader is at step {plan.step}, the trainer at step {step}")
            if plan.index == plan.count - 1:
                break
        if self.engine.lr_scheduler is not None:
            self.engine.lr_scheduler.step()

    def samples_of(self, step: int) -> str:
        """Step ``step``'s global batch: these positions of the training order (:mod:`pretrain.data`)."""
        first = (step - 1) * self.loop.global_batch
        return f"{first}-{first + self.loop.global_batch - 1}"

    def skip_record(self, step: int) -> dict:
        """What metrics.jsonl and wandb say of a skipped step: why, and which samples."""
        return {"skipped_step": self.skips[step], "skipped_samples": self.samples_of(step)}

    def roll_back(self, bad: BadStep) -> dict:
        """Reload the newest checkpoint (before ``bad.step``: none is written past a bad step), mark
        ``bad.step`` to be skipped and go on from the checkpoint; its state. Every rank takes the same
        decision (the checks behind ``bad`` are collectives) and reloads; one that cannot fails them all."""
        self.budget.take(bad)  # RollbackLimit: one too many
        resume = self.checkpoints.find()
        if resume is None:
            raise RollbackFailed(f"{bad}: there is no checkpoint to roll back to yet (the first is written at "
                                 f"step {self.loop.checkpoint_every}, checkpoint.every_steps)") from bad
        failure = None
        try:
            state = self.checkpoints.load(self.engine, resume)
        except Exception as e:  # noqa: BLE001 - reported below, on every rank
            failure, state = e, {}
        failed = torch.tensor([1.0 if failure else 0.0], device=self.device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if failed.item():
            raise RollbackFailed(f"{bad}: reloading {resume.path} failed on "
                                 f"{'this rank' if failure else 'another rank'}: {failure or 'see its log'}") from bad
        self.skips[bad.step] = f"{bad.reason}; rolled back to step {state['step']}"
        self.bad.zero_()
        self.spikes.forget_after(state["step"])
        self.scale.reset()
        self.open_batches(state["step"])
        self.metrics.rewind(state["step"])
        log.warning("%s: rolled back to the checkpoint of step %d (%s); the global batch of step %d (samples "
                    "%s of the training order) will be skipped", bad, state["step"], resume.path.name, bad.step,
                    self.samples_of(bad.step))
        return {**state, "skipped": self.skipped()}

    def train_step(self, step: int, measure_grad_norm: bool = False) -> tuple[torch.Tensor, dict[str, int], float]:
        """Optimizer step ``step + 1`` over this rank's micro-batches of the step (as many as the loader
        planned, the same on every rank): its sums (device, see ``SUMS``), its host counts (``COUNTS``) and
        its seconds spent waiting for data."""
        sums = torch.zeros(len(SUMS), dtype=torch.float64, device=self.device)
        counts, waited = dict.fromkeys(COUNTS, 0), 0.0
        while True:
            t = time.perf_counter()
            batch = next(self.batches)
            waited += time.perf_counter() - t
            plan = batch["plan"]
            if plan.step != step:
                raise RuntimeError(f"the loader is at step {plan.step}, the trainer at step {step}")
            for k in COUNTS:
                counts[k] += batch["counts"][k]  # ints made by the collator
            torch.manual_seed(mix_int(self.loop.seed, step, plan.place) >> 1)  # dropout: not a function of the rank
            poison = step + 1 in self.loop.guard.inject_nonfinite_at
            sums += self.forward_backward(batch["inputs"], plan, measure_grad_norm, poison)
            if plan.index == plan.count - 1:
                return sums, counts, waited

    def forward_backward(self, batch: dict[str, torch.Tensor | None], plan: MicroBatch,
                         measure_grad_norm: bool = False, poison: bool = False) -> torch.Tensor:
        """Forward, backward and the engine's step (which applies the update after the step's last
        micro-batch); the micro-batch's sums, on the device.

        The loss is the micro-batch's share of the global batch's: its summed MLM and NSP losses over
        the masked positions and the sequences of the whole global batch (the loader's normalisers),
        times the world size, as DeepSpeed averages gradients over ranks. Summed over all micro-batches
        of all ranks, the gradient is that of the global batch's mean losses, however many micro-batches
        the step has and however the sequences are laid out in them. ``poison``: fault injection
        (``train.inject_nonfinite_at``), the loss and its gradients made NaN.
        """
        batch = {k: (v.to(self.device, non_blocking=True) if v is not None else None) for k, v in batch.items()}
        out = self.engine(**batch)
        loss = (out.mlm_loss_sum / max(1, plan.masked_tokens) + out.nsp_loss_sum / plan.sequences) * self.loop.world_size
        if poison:
            loss = loss * float("nan")
        self.engine.set_gradient_accumulation_boundary(plan.index == plan.count - 1)
        self.engine.backward(loss, scale_wrt_gas=False)
        last = self.engine.is_gradient_accumulation_boundary()
        if measure_grad_norm and last:
            # the gradients are averaged over ranks by now and not yet clipped (as DeepSpeed reports it)
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            self.grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        with self.optimizer_time.timing(last):
            self.engine.step()
        sums = torch.stack([getattr(out, k).detach().double() for k in SUMS])
        return sums * float("nan") if poison else sums

    def log(self, step: int, sums: torch.Tensor, interval: Interval, state: dict) -> None:
        """Reduce the step's sums and the interval's counts over ranks and log them (one host read)."""
        loop = self.loop
        timed = (interval.waited, self.optimizer_time.read(), self.syncs.read() if self.syncs else 0)
        host = torch.tensor([*(interval.counts[k] for k in COUNTS), *timed], dtype=torch.float64, device=self.device)
        summed = torch.cat([sums, host])
        dist.all_reduce(summed)
        self.check_finite()
        v = dict(zip((*SUMS, *COUNTS, "waited", "optimizer_seconds", "host_syncs"), summed.tolist()))
        interval.counts = {k: int(v[k]) for k in COUNTS}
        interval.waited, interval.optimizer_seconds = v["waited"], v["optimizer_seconds"]
        if self.syncs:
            interval.host_syncs = v["host_syncs"]
        mlm_loss = v["mlm_loss_sum"] / max(1.0, v["mlm_total"])  # the step's means over the global batch
        nsp_loss = v["nsp_loss_sum"] / max(1.0, v["nsp_total"])
        m = {
            "loss": mlm_loss + nsp_loss,
            "mlm_loss": mlm_loss,
            "nsp_loss": nsp_loss,
            "mlm_accuracy": v["mlm_correct"] / max(1.0, v["mlm_total"]),
            "nsp_accuracy": v["nsp_correct"] / max(1.0, v["nsp_total"]),
            **interval.rates(loop.global_batch, loop.flops, loop.world_size, loop.peak_tflops),
            "lr": self.engine.get_lr()[0],
            "grad_norm": float(self.grad_norm) if self.own_grad_norm and self.grad_norm is not None
            else grad_norm(self.engine),
            "skipped_steps": int(self.engine.skipped_steps),
            "samples": state["samples"],
            "memory_gb": memory_gb(),
        }
        if loop.fp16:
            m["loss_scale"] = float(getattr(self.engine.optimizer, "loss_scale", float("nan")))
        if self.spikes.spiked(step, m["loss"]):  # the same reduced loss on every rank: the same decision
            raise BadStep(step, f"loss spike ({m['loss']:.4g}, above {self.spikes.factor} times the median of the "
                          f"last {self.spikes.window} logged losses)")
        self.metrics.log(step, m)

    def _track_finite(self, loss_sum: torch.Tensor, step: int) -> None:
        """Remember (on the device, no sync) the first step whose loss was not finite."""
        first = (self.bad == 0) & ~torch.isfinite(loss_sum)
        self.bad = torch.where(first, torch.full_like(self.bad, _NO_BAD_STEP - step), self.bad)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLoss` naming the first bad step of any rank (a collective)."""
        bad = self.bad.clone()
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bad.item():
            step = int(_NO_BAD_STEP - bad.item())
            raise NonFiniteLoss(step, "loss is not finite", "lower optim.lr, raise optim.warmup_steps, or use bf16 "
                                "instead of fp16 (train.on_nonfinite=rollback rolls back and skips the step)")
