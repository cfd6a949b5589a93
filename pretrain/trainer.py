"""The training loop: ``train()`` -> ``train_step()``.

Everything random in a step is a function of (seed, step, rank): the data order
(:mod:`pretrain.data`) and the dropout masks (the torch generator is re-seeded at
each step). So a run resumed from a checkpoint repeats exactly the losses of an
uninterrupted run, and nothing in the loop needs to skip through data.
"""

from __future__ import annotations

import json
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
from pretrain.config import ConfigError, TrainConfig, check_against, save_resolved
from pretrain.data import BatchPlan, make_loader
from pretrain.engine import World, build_engine, grad_norm, init_distributed
from pretrain.evaluation import Evaluator
from pretrain.export import MODEL_CONFIG
from pretrain.metrics import MetricsLogger, WandbSink, wandb_mode
from pretrain.model import (
    BertConfig,
    BertForPreTraining,
    build_model,
    flops_per_token,
    set_activation_checkpointing,
)

log = logging.getLogger("pretrain")


FINISHED = "FINISHED"


class Interval:
    """Throughput over the steps since the last log line."""

    def __init__(self):
        self.start = time.perf_counter()
        self.steps = self.tokens = 0
        self.waited = 0.0

    def add(self, m: dict) -> None:
        self.steps += 1
        self.tokens += m.pop("real_tokens")
        self.waited += m.pop("data_wait_s")

    def rates(self, global_batch: int, flops_per_token: float, world: int, peak_tflops: float) -> dict[str, float]:
        """samples/s; tokens/s (real, non-pad); achieved TFLOP/s per device (``flops_per_token`` x tokens/s,
        see :func:`pretrain.model.flops_per_token`); MFU against ``peak_tflops``; share of time waiting for data."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        tokens_s = self.tokens / elapsed
        tflops = tokens_s * flops_per_token / 1e12 / world
        out = {"samples_per_s": self.steps * global_batch / elapsed, "tokens_per_s": tokens_s,
               "tflops_per_device": tflops, "data_wait_share": self.waited / elapsed}
        if peak_tflops:
            out["mfu"] = tflops / peak_tflops
        return out


def memory_gb() -> float:
    """Peak accelerator memory, or this process's resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    import psutil

    return psutil.Process().memory_info().rss / 2**30


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
            raise ConfigError(f"model.init_from {cfg.model.init_from}: vocabulary {model.config.vocab_size} "
                              f"is smaller than the data's {manifest['vocab']['size']}")
        if model.config.max_position_embeddings < manifest["config"]["max_seq_length"]:
            raise ConfigError(f"model.init_from {cfg.model.init_from}: {model.config.max_position_embeddings} "
                              f"positions, the data has sequences of {manifest['config']['max_seq_length']}")
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
    check_against(cfg, data.manifest, world.size, on_gpu=torch.cuda.is_available())
    if world.rank == 0:
        save_resolved(cfg, run_dir, world.size)
    init_distributed(cfg, world)
    model = build(cfg, data.manifest)
    if world.rank == 0:  # what export needs to rebuild the model and its tokenizer files
        (run_dir / MODEL_CONFIG).write_text(json.dumps(model.config.to_hf_dict(), indent=2, sort_keys=True))
        vocab = data.manifest["vocab"]
        (run_dir / "data.json").write_text(json.dumps(
            {"path": cfg.data.path, "vocab_file": str(Path(cfg.data.path) / vocab["file"]),
             "lower_case": vocab.get("lower_case", True), "fingerprint": vocab["fingerprint"]}, indent=2))
    engine = build_engine(cfg, model, world)
    checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.checkpoint.keep_last, world.rank)
    state = checkpoints.load_latest(engine) or {"step": 0, "samples": 0}
    if state["step"]:
        log.info("resumed from step %d", state["step"])

    plan = BatchPlan(len(data), cfg.deepspeed.global_batch_size, cfg.data.micro_batch_size, world.size,
                     world.rank, cfg.data.seed, cfg.data.length_bucketing)
    batches = iter(make_loader(data, plan, state["step"], cfg.data.num_workers, cfg.data.dynamic_masking))
    evaluator = None
    if cfg.eval.every_steps:
        evaluator = Evaluator(PretrainingDataset(cfg.data.path, cfg.data.eval_split), cfg.data.micro_batch_size,
                              cfg.eval.max_batches, world.rank, world.size)
    flops = flops_per_token(model.config, int(data.config["max_seq_length"]), int(data.config["max_predictions_per_seq"]))
    sink = None
    if world.rank == 0 and wandb_mode(cfg.logging.wandb) != "disabled":
        sink = WandbSink(run_dir, wandb_mode(cfg.logging.wandb), cfg.logging.wandb_project, cfg.logging.run_name,
                         cfg.model_dump(mode="json"))
    metrics = MetricsLogger(run_dir, world.rank, cfg.optim.total_steps, sink)
    stop = StopSignal()
    step = state["step"]
    last = min(cfg.optim.total_steps, cfg.stop_at_step or cfg.optim.total_steps)
    interval = Interval()
    while step < last:
        torch.manual_seed(mix_int(cfg.data.seed, step, world.rank) >> 1)  # dropout: a function of the step
        m = train_step(engine, batches, plan.accumulation)
        step += 1
        state = {"step": step, "samples": state["samples"] + plan.global_batch}
        if not math.isfinite(m["loss"]):
            raise NonFiniteLoss(f"loss is {m['loss']} at step {step}: lower optim.lr, raise optim.warmup_steps, "
                                "or use bf16 instead of fp16")
        interval.add(m)
        if step % cfg.logging.every_steps == 0 or step == last:
            m.update(interval.rates(plan.global_batch, flops, world.size, cfg.logging.peak_tflops_per_device))
            m.update(lr=engine.get_lr()[0], grad_norm=grad_norm(engine), skipped_steps=int(engine.skipped_steps),
                     samples=state["samples"], memory_gb=memory_gb())
            if cfg.deepspeed.precision == "fp16":
                m["loss_scale"] = float(getattr(engine.optimizer, "loss_scale", float("nan")))
            metrics.log(step, m)
            interval = Interval()
        if evaluator and (step % cfg.eval.every_steps == 0 or step == last):
            metrics.log(step, evaluator.run(engine))
        stopping = stop.agreed()
        if step % cfg.checkpoint.every_steps == 0 or step == last or stopping:
            checkpoints.save(engine, state)
        if stopping:
            log.warning("signal %s: checkpointed at step %d, stopping", stop.received, step)
            break
    if world.rank == 0 and step == cfg.optim.total_steps:
        (run_dir / FINISHED).write_text(json.dumps(state) + "\n")  # batch scripts: export, or requeue if absent
    metrics.close()
    return {**state, "finished": step == cfg.optim.total_steps}
