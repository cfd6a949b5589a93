"""One training run from its configuration: the data, the model, the engine and the trainer's
collaborators, built once, in order, and handed to :class:`pretrain.trainer.Trainer`.

The configuration flows down: each section is read here, where its part is built, and
nothing is passed back up. Everything that can be checked before work starts (the
config against the data and the world, the run directory's dataset, phase 2's
vocabulary) is checked before the process group starts.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from preprocess.dataset import DatasetInfo
from preprocess.reader import PretrainingDataset
from preprocess.rng import mix_int
from pretrain import fit
from pretrain.checkpoint import CheckpointManager, Shape
from pretrain.config import AUTO, ConfigError, TrainConfig, check_against, resolved
from pretrain.data import BatchPlan, make_loader
from pretrain.distributed import StopSignal, World, end_distributed, init_distributed
from pretrain.engine import FP16_MIN_LOSS_SCALE, build_engine
from pretrain.evaluation import Evaluator
from pretrain.guard import RUN_STOPPED
from pretrain.hf_format import CheckpointFormatError, load_pretrained, vocab_fingerprint
from pretrain.metrics import MetricsLogger, WandbSink, wandb_mode
from pretrain.model import (
    BertConfig,
    BertForPreTraining,
    build_model,
    set_activation_checkpointing,
)
from pretrain.model_config import training_flops
from pretrain.run_dir import DataRef, RunDir, directory_problem
from pretrain.trainer import Guard, Loop, Trainer

log = logging.getLogger("pretrain")


def train(cfg: TrainConfig, world: World) -> dict:
    """Train to ``optim.total_steps`` (or ``stop_at_step``), resuming from the newest complete
    checkpoint; the final state, with ``finished`` set when the schedule's end was reached."""
    run = RunDir(cfg.run_dir)
    try:
        state = _train(cfg, world, run)
    except RUN_STOPPED as e:  # decided by every rank together: the groups can end cleanly
        e.with_traceback(None)  # its frames held the engine
        end_distributed()
        raise
    # _train has returned: the engine, its optimizer, loader and evaluator are unreferenced now, and
    # end_distributed collects them while the interpreter is whole (else gloo aborts the exit)
    end_distributed()  # after a failure the process exits with its error instead
    finished = state["step"] == cfg.optim.total_steps
    if world.rank == 0 and finished:
        run.mark_finished(state)  # batch scripts: export, or requeue if absent
    return {**state, "finished": finished}


def _train(cfg: TrainConfig, world: World, run: RunDir) -> dict:
    """The run up to its last step; the state reached."""
    if problem := directory_problem(run.root):  # on every rank, before any work
        raise ConfigError(f"run_dir {run.root}: {problem}; give a directory (it is created if missing)")
    data = PretrainingDataset(cfg.data.path, cfg.data.train_split)
    info = data.info
    check_against(cfg, info, world.size, on_gpu=torch.cuda.is_available())
    started_on = run.data_ref()
    if started_on is not None:
        info.check_vocab(started_on.fingerprint, f"run_dir {run.root} (started on {started_on.path})")
    model = build(cfg, info)
    checkpoints = CheckpointManager(run.checkpoints, cfg.checkpoint.keep_last, world.rank,
                                    Shape(world.size, cfg.deepspeed.zero_stage))
    check_resumable(run, checkpoints, model.config)
    if world.rank == 0:  # after every check: a refused run leaves no directory behind
        run.create()
    init_distributed(world, cfg.deepspeed.dist_timeout_minutes)
    if cfg.data.micro_batch_size == AUTO:
        cfg = fit.resolve(cfg, model.config, info, world, run)
    if world.rank == 0:  # the configuration as run; what export needs to rebuild the model and its tokenizer
        run.write_config(resolved(cfg, world.size))
        run.write_model_config(model.config)
        # absolute: export and status read them from wherever they are run
        run.write_data_ref(DataRef(os.path.abspath(cfg.data.path), os.path.abspath(info.vocab_file),
                                   info.lower_case, info.vocab_fingerprint))

    resume = checkpoints.find()
    engine = build_engine(cfg, model, world.size, load_universal=resume is not None and resume.universal)
    state = {"step": 0, "samples": 0}
    if resume is not None:
        state = checkpoints.load(engine, resume)
        log.info("resumed from step %d%s", state["step"],
                 f" (written by {resume.written_by}, loaded as universal)" if resume.universal else "")
    if cfg.model.compile:
        engine.compile(backend=cfg.model.compile_backend)  # in place (nn.Module.compile): parameter names unchanged
        if engine.is_compiled:
            log.info("model compiled with torch.compile (backend %s): the first step compiles it",
                     cfg.model.compile_backend)
    went_back = run.supersede_metrics(state["step"]) if world.rank == 0 else None
    if went_back is not None:
        log.info("steps %d to %d are trained again: their earlier records moved to %s; wandb keeps its own "
                 "and gets records from step %d on", state["step"] + 1, went_back, run.metrics_superseded.name,
                 went_back + 1)
    plan = BatchPlan(len(data), cfg.deepspeed.global_batch_size, cfg.data.micro_batch_size, world.size,
                     world.rank, cfg.data.seed, cfg.data.length_bucketing, cfg.data.packing, info.max_seq_length,
                     cfg.data.max_sequences_per_row, info.max_predictions_per_seq)
    pinned = torch.device(engine.device).type == "cuda"  # batches copied to the GPU without blocking

    def batches(step: int):  # from step + 1 on; again after a roll-back
        return iter(make_loader(data, plan, step, cfg.data.num_workers, cfg.data.dynamic_masking, pinned))

    evaluator = None
    if cfg.eval.every_steps:
        held_out = PretrainingDataset(cfg.data.path, cfg.data.eval_split, expect_vocab_fingerprint=info.vocab_fingerprint)
        evaluator = Evaluator(held_out, cfg.data.micro_batch_size, cfg.eval.max_sequences, world.rank, world.size,
                              pinned)
    sink = None
    if world.rank == 0 and wandb_mode(cfg.logging.wandb) != "disabled":
        sink = WandbSink(run, wandb_mode(cfg.logging.wandb), cfg.logging.wandb_project, cfg.logging.run_name,
                         cfg.model_dump(mode="json"))
    metrics = MetricsLogger(run, world.rank, cfg.optim.total_steps, sink, wandb_after=went_back)
    loop = Loop(
        last_step=min(cfg.optim.total_steps, cfg.stop_at_step or cfg.optim.total_steps),
        total_steps=cfg.optim.total_steps,
        log_every=cfg.logging.every_steps,
        checkpoint_every=cfg.checkpoint.every_steps,
        eval_every=cfg.eval.every_steps,
        seed=cfg.data.seed,
        rank=world.rank,
        world_size=world.size,
        global_batch=plan.global_batch,
        flops=functools.partial(training_flops, model.config),
        peak_tflops=cfg.logging.peak_tflops_per_device,
        fp16=cfg.deepspeed.precision == "fp16",
        count_host_syncs=cfg.logging.count_host_syncs,
        guard=Guard(
            rollback=cfg.train.on_nonfinite == "rollback",
            max_rollbacks=cfg.train.max_rollbacks,
            rollback_window=cfg.train.rollback_window,
            spike_factor=cfg.train.spike_factor,
            spike_window=cfg.train.spike_window,
            fp16_min_scale_steps=cfg.train.fp16_min_scale_steps,
            fp16_min_scale=FP16_MIN_LOSS_SCALE,
            skip_steps=frozenset(cfg.train.skip_steps),
            inject_nonfinite_at=frozenset(cfg.train.inject_nonfinite_at),
        ),
    )
    trainer = Trainer(engine, batches, loop, checkpoints, metrics, evaluator, StopSignal(engine.device))
    try:
        state = trainer.train(state)
    finally:
        metrics.close()
    engine.destroy()  # ZeRO-3's hooks and prefetcher hold parameters and collectives' handles
    return state


def check_resumable(run: RunDir, checkpoints: CheckpointManager, config: BertConfig) -> None:
    """A run directory with checkpoints resumes only the model they hold: refuse another shape
    before anything in the directory is rewritten."""
    if not (checkpoints.written() and run.model_config_file.exists()):
        return
    held = run.model_config()
    if held.shape() != config.shape():
        raise ConfigError(
            f"run_dir {run.root}: its checkpoints hold a model of shape {held.describe_shape()}, this config "
            f"builds {config.describe_shape()}; give a new run_dir, or start from the trained weights with "
            f"model.init_from (an export: python -m pretrain export {run.root})")


def build(cfg: TrainConfig, info: DatasetInfo) -> BertForPreTraining:
    """The model: fresh (seeded, the same on every rank) or from ``model.init_from`` (phase 2),
    checked against the data's vocabulary and sequence length."""
    if cfg.model.init_from:
        source = f"model.init_from {cfg.model.init_from}"
        try:
            info.check_vocab(vocab_fingerprint(cfg.model.init_from), source)
            model, report = load_pretrained(cfg.model.init_from)
        except CheckpointFormatError as e:
            reason = str(e).removeprefix(f"{cfg.model.init_from}: ")
            raise ConfigError(f"{source}: {reason}; give a directory written by python -m pretrain export "
                              "(or a transformers BERT checkpoint)") from None
        if model.config.vocab_size < info.vocab_size:
            raise ConfigError(f"{source}: vocabulary {model.config.vocab_size} is smaller than the data's "
                              f"{info.vocab_size}")
        if model.config.max_position_embeddings < info.max_seq_length:
            raise ConfigError(f"{source}: {model.config.max_position_embeddings} positions, the data has "
                              f"sequences of {info.max_seq_length}")
        if report["initialized"]:
            log.warning("initialised (absent from %s): %s", cfg.model.init_from, ", ".join(report["initialized"]))
    else:
        torch.manual_seed(mix_int(cfg.data.seed, 0x1217) >> 1)  # same initial weights on every run and rank
        config = BertConfig.for_dataset(
            cfg.model.size, info,
            hidden_dropout_prob=cfg.model.hidden_dropout_prob,
            attention_probs_dropout_prob=cfg.model.attention_probs_dropout_prob,
        )
        model = build_model(config)
    set_activation_checkpointing(model, cfg.model.activation_checkpointing)
    return model
