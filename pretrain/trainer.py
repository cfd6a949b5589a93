"""The training loop: ``train()`` -> ``train_step()``.

Everything random in a step is a function of (seed, step, rank): the data order
(:mod:`pretrain.data`) and the dropout masks (the torch generator is re-seeded at
each step). So a run resumed from a checkpoint repeats exactly the losses of an
uninterrupted run, and nothing in the loop needs to skip through data.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from preprocess.reader import PretrainingDataset
from preprocess.rng import mix_int
from pretrain.checkpoint import CheckpointManager
from pretrain.config import TrainConfig, check_against, save_resolved
from pretrain.data import BatchPlan, make_loader
from pretrain.engine import World, build_engine, grad_norm, init_distributed
from pretrain.metrics import MetricsLogger
from pretrain.model import BertConfig, BertForPreTraining, build_model, set_activation_checkpointing

log = logging.getLogger("pretrain")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class StopSignal:
    """SIGTERM or SIGUSR1 (Slurm sends one before the time limit): finish the step,
    checkpoint, exit cleanly. Ranks agree through a collective, so all stop together."""

    def __init__(self):
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.received = signum

    def agreed(self) -> bool:
        flag = torch.tensor([1 if self.received else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def build(cfg: TrainConfig, manifest: dict) -> BertForPreTraining:
    if cfg.model.init_from:
        from pretrain.hf_format import load_pretrained

        model, report = load_pretrained(cfg.model.init_from, unpad=cfg.model.unpad)
        if model.config.vocab_size < manifest["vocab"]["size"]:
            raise ValueError(f"model.init_from {cfg.model.init_from}: vocabulary {model.config.vocab_size} "
                             f"is smaller than the data's {manifest['vocab']['size']}")
        if report["initialized"]:
            log.warning("initialised (absent from %s): %s", cfg.model.init_from, ", ".join(report["initialized"]))
    else:
        torch.manual_seed(mix_int(cfg.data.seed, 0x1217) >> 1)  # same initial weights on every run and rank
        config = BertConfig.for_dataset(
            cfg.model.size, manifest,
            hidden_dropout_prob=cfg.model.hidden_dropout_prob,
            attention_probs_dropout_prob=cfg.model.attention_probs_dropout_prob,
        )
        model = build_model(config, unpad=cfg.model.unpad)
    set_activation_checkpointing(model, cfg.model.activation_checkpointing)
    return model


def train_step(engine, batches, accumulation: int) -> dict[str, float]:
    """One optimizer step over ``accumulation`` micro-batches; metrics summed over ranks."""
    totals = torch.zeros(7, dtype=torch.float64)  # loss, mlm loss, nsp loss, mlm ok, mlm n, nsp ok, nsp n
    tokens, waited = 0, 0.0
    for _ in range(accumulation):
        t = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - t
        tokens += int(batch.pop("real_tokens"))
        batch = {k: (v.to(engine.device) if v is not None else None) for k, v in batch.items()}
        out = engine(**batch)
        engine.backward(out.loss)
        engine.step()
        totals += torch.tensor([out.loss.item(), out.mlm_loss.item(), out.nsp_loss.item(), out.mlm_correct.item(),
                                out.mlm_total.item(), out.nsp_correct.item(), out.nsp_total.item()],
                               dtype=torch.float64)
    summed = torch.cat([totals, torch.tensor([tokens, waited], dtype=torch.float64)])
    dist.all_reduce(summed)
    world = dist.get_world_size()
    micro = accumulation * world
    return {
        "loss": summed[0].item() / micro,
        "mlm_loss": summed[1].item() / micro,
        "nsp_loss": summed[2].item() / micro,
        "mlm_accuracy": summed[3].item() / max(1.0, summed[4].item()),
        "nsp_accuracy": summed[5].item() / max(1.0, summed[6].item()),
        "real_tokens": int(summed[7].item()),
        "data_wait_s": summed[8].item() / world,
    }


def train(cfg: TrainConfig, world: World) -> dict:
    """Train to ``optim.total_steps``, resuming from the newest complete checkpoint."""
    run_dir = Path(cfg.run_dir)
    data = PretrainingDataset(cfg.data.path, cfg.data.train_split)
    check_against(cfg, data.manifest, world.size)
    if world.rank == 0:
        save_resolved(cfg, run_dir, world.size)
    init_distributed(cfg, world)
    model = build(cfg, data.manifest)
    engine = build_engine(cfg, model, world)
    checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.checkpoint.keep_last, world.rank)
    state = checkpoints.load_latest(engine) or {"step": 0, "samples": 0}
    if state["step"]:
        log.info("resumed from step %d", state["step"])

    plan = BatchPlan(len(data), cfg.deepspeed.global_batch_size, cfg.data.micro_batch_size, world.size,
                     world.rank, cfg.data.seed)
    batches = iter(make_loader(data, plan, state["step"], cfg.data.num_workers))
    metrics = MetricsLogger(run_dir, world.rank, cfg.optim.total_steps)
    stop = StopSignal()
    step = state["step"]
    last = min(cfg.optim.total_steps, cfg.stop_at_step or cfg.optim.total_steps)
    t = time.perf_counter()
    while step < last:
        torch.manual_seed(mix_int(cfg.data.seed, step, world.rank) >> 1)  # dropout: a function of the step
        m = train_step(engine, batches, plan.accumulation)
        step += 1
        state = {"step": step, "samples": state["samples"] + plan.global_batch}
        if not math.isfinite(m["loss"]):
            raise NonFiniteLoss(f"loss is {m['loss']} at step {step}")
        if step % cfg.logging.every_steps == 0 or step == cfg.optim.total_steps:
            elapsed = time.perf_counter() - t
            t = time.perf_counter()
            m.update(lr=engine.get_lr()[0], grad_norm=grad_norm(engine), skipped_steps=int(engine.skipped_steps),
                     samples=state["samples"], step_time_s=elapsed / cfg.logging.every_steps)
            metrics.log(step, m)
        stopping = stop.agreed()
        if step % cfg.checkpoint.every_steps == 0 or step == last or stopping:
            checkpoints.save(engine, state)
        if stopping:
            log.warning("signal %s: checkpointed at step %d, stopping", stop.received, step)
            break
    metrics.close()
    return state
