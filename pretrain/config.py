"""Typed training configuration: one section per concern, YAML plus command-line overrides.

``load_config("configs/tiny-cpu.yaml", ["optim.lr=3e-4", "data.micro_batch_size=16"])``
reads the file, applies ``section.field=value`` overrides (values parsed as YAML),
and validates every field with pydantic before any work starts. Cross-checks that
need the data or the world size (vocabulary and sequence length against the
model, batch arithmetic) are in :func:`check_against` and run once at start-up.
The resolved configuration is written into the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from preprocess.dataset import DatasetInfo


AUTO = "auto"  # data.micro_batch_size: measured on the GPU before training (pretrain.fit)


class ConfigError(ValueError):
    """The configuration cannot work; the message names the field and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """The BERT model: its size, initial weights, activation checkpointing and compilation."""

    size: Literal["tiny", "mini", "small", "base", "large"] = Field(
        "tiny", description="named size: tiny 128 hidden x 2 layers, mini 256 x 4, small 512 x 4, base 768 x 12, "
        "large 1024 x 24 (vocabulary and positions come from the dataset)")
    init_from: str | None = Field(None, description="start from these weights: a directory written by python -m "
                                  "pretrain export (phase 2 starts from phase 1's export), or a transformers BERT")
    activation_checkpointing: int = Field(0, ge=0, description="0 off, 1 every layer, k every k-th layer")
    compile: bool = Field(False, description="torch.compile the model (DeepSpeed's engine.compile); the first "
                          "step of a process compiles and is left out of throughput and ETA")
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor", description="torch.compile's backend: inductor generates fused kernels; aot_eager and eager "
        "only trace (for checking a model compiles)")
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1, description="dropout after embeddings, attention "
                                       "output and feed-forward (BERT's hidden_dropout_prob)")
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1, description="dropout on attention "
                                                "probabilities (BERT's attention_probs_dropout_prob)")


class DataSection(_Section):
    """The dataset (python -m preprocess's output) and how batches are made from it."""

    path: str = Field(..., description="dataset directory (manifest.json and shards) written by python -m preprocess")
    train_split: str = Field("train", description="split trained on")
    eval_split: str = Field("validation", description="split evaluated on (eval.every_steps)")
    micro_batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        8, description="rows a micro-batch; auto: the largest whose step fits the GPU (pretrain.fit)")
    auto_memory_fraction: float = Field(0.9, gt=0, le=1, description="micro_batch_size auto: the share of the "
                                        "GPU's memory a step may peak at")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per rank; 0 loads in the "
                             "training process")
    seed: int = Field(1234, description="the training order, dropout and initial weights derive from it")
    length_bucketing: int = Field(0, ge=0, description="window of global steps sorted by length; 0: off")
    dynamic_masking: bool = Field(False, description="new masks each epoch instead of the preprocessed ones")
    packing: bool = Field(False, description="pack each global batch's sequences into full rows (micro_batch_size "
                          "then counts rows); not with length_bucketing")
    max_sequences_per_row: int = Field(3, ge=1, description="packed sequences per row at most")


class OptimSection(_Section):
    """The optimizer and its learning-rate schedule."""

    name: Literal["adamw", "lamb"] = Field("adamw", description="adamw: torch's AdamW (fused on a GPU); lamb: LAMB "
                                          "(pretrain.optim), correct under every ZeRO stage")
    lr: float = Field(1e-4, gt=0, description="peak learning rate, reached at the end of warm-up")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay; biases and LayerNorm weights "
                                "are not decayed")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's and LAMB's moment coefficients")
    eps: float = Field(1e-6, gt=0, description="added to the second moment's root")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from 0 to lr")
    total_steps: int = Field(..., ge=1, description="optimizer steps of the whole schedule; the run finishes there")
    schedule: Literal["linear", "poly"] = Field("linear", description="decay after warm-up, to 0 at total_steps")
    power: float = Field(1.0, gt=0, description="poly decay exponent (1.0 = linear)")
    grad_clip: float = Field(1.0, ge=0, description="clip the global gradient norm to this; 0: no clipping")


class DeepSpeedSection(_Section):
    """The DeepSpeed engine: ZeRO, precision and the global batch."""

    zero_stage: int = Field(0, ge=0, le=3, description="ZeRO stage: 0 none, 1 optimizer states, 2 and "
                            "gradients, 3 and parameters partitioned across ranks")
    offload_optimizer: bool = Field(False, description="keep optimizer states and the step on the CPU "
                                    "(ZeRO 1-3)")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="training precision; bf16 on "
                                                       "A100/H100, fp16 with loss scaling")
    global_batch_size: int = Field(..., ge=1, description="sequences per optimizer step over all ranks (rows "
                                   "with data.packing); micro-batches x ranks x accumulation steps")
    dist_timeout_minutes: int = Field(10, ge=1, description="collective timeout: a dead rank ends the job")


class CheckpointSection(_Section):
    """Checkpoints in RUN_DIR/checkpoints."""

    every_steps: int = Field(100, ge=1, description="steps between checkpoints; also at the "
                             "last step and on a stop signal (SIGTERM, SIGUSR1)")
    keep_last: int = Field(3, ge=1, description="complete checkpoints kept; older ones are deleted")


class LoggingSection(_Section):
    """Metrics: RUN_DIR/metrics.jsonl, the console and wandb."""

    every_steps: int = Field(10, ge=1, description="steps between logged records")
    wandb: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: WANDB_MODE if set, else online with an API key (WANDB_API_KEY or "
        "~/.netrc), else offline")
    wandb_project: str = Field("bert-pretraining", description="wandb project")
    run_name: str | None = Field(None, description="wandb run name; default: the run directory's name")
    peak_tflops_per_device: float = Field(0.0, ge=0, description="for MFU; 0 leaves MFU out (H100 bf16: 989)")
    count_host_syncs: bool = Field(False, description="on a GPU, log host_syncs_per_step: the synchronisations "
                                   "CUDA reports while steps train (torch.cuda.set_sync_debug_mode)")


class EvalSection(_Section):
    """Held-out evaluation on data.eval_split."""

    every_steps: int = Field(0, ge=0, description="0: no evaluation")
    max_sequences: int = Field(10_000, ge=1, description="validation sequences per evaluation, at any world size")


class TrainSection(_Section):
    """What the run does about a bad step: a loss that is not finite, a spike, a stuck fp16 loss scale."""

    on_nonfinite: Literal["stop", "rollback"] = Field(
        "rollback", description="on a bad step: rollback reloads the newest checkpoint, skips the bad step's "
        "global batch and goes on (each roll-back logged); stop ends the run with an error naming the step")
    max_rollbacks: int = Field(3, ge=0, description="roll-backs allowed within rollback_window steps; one more "
                               "stops the run with an error")
    rollback_window: int = Field(1000, ge=1, description="the window of steps max_rollbacks counts in")
    spike_factor: float = Field(0.0, ge=0, description="a logged loss above this many times the median of the "
                                "last spike_window logged losses is a bad step; 0: off")
    spike_window: int = Field(100, ge=1, description="logged losses the spike rule's median is taken over")
    fp16_min_scale_steps: int = Field(0, ge=0, description="fp16: the loss scale held at its minimum for this "
                                      "many steps in a row is a bad step; 0: off")
    skip_steps: list[Annotated[int, Field(ge=1)]] = Field(
        [], description="steps whose global batch is skipped (its data drawn, not trained on; the schedule "
        "moves on), as a roll-back skips a bad step's")
    inject_nonfinite_at: list[Annotated[int, Field(ge=1)]] = Field(
        [], description="fault injection, to see a roll-back happen: the loss of these steps is made NaN "
        "(and with it the gradients and weights)")


class TrainConfig(_Section):
    """A training run: its directory and one section per concern."""

    run_dir: str = Field(..., description="the run directory: config, checkpoints, metrics; a run resumes from it")
    stop_at_step: int | None = Field(None, ge=1, description="checkpoint and stop here; the schedule still "
                                     "runs to optim.total_steps (for time-boxed jobs)")
    model: ModelSection = ModelSection()
    data: DataSection
    optim: OptimSection
    deepspeed: DeepSpeedSection
    checkpoint: CheckpointSection = CheckpointSection()
    logging: LoggingSection = LoggingSection()
    eval: EvalSection = EvalSection()
    train: TrainSection = TrainSection()

    @model_validator(mode="after")
    def _packing_or_bucketing(self) -> TrainConfig:
        if self.data.packing and self.data.length_bucketing:
            raise ValueError("data.packing and data.length_bucketing are alternatives (packing fills rows "
                             "whatever the lengths; bucketing would leave it only similar lengths to pair): "
                             "set one of them")
        return self

    @model_validator(mode="after")
    def _compile_not_with_zero_3(self) -> TrainConfig:
        if self.model.compile and self.deepspeed.zero_stage == 3:
            raise ValueError("model.compile does not work with deepspeed.zero_stage 3 (ZeRO-3 gathers each "
                             "parameter in hooks that torch.compile traces as empty tensors): use ZeRO-1 or 2, or "
                             "model.compile=false")
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.optim.warmup_steps >= self.optim.total_steps:
            raise ValueError(
                f"optim.warmup_steps ({self.optim.warmup_steps}) must be below optim.total_steps "
                f"({self.optim.total_steps})"
            )
        return self

    def accumulation_steps(self, world_size: int) -> int:
        """Micro-batches per rank and step; packed, the most a step can need (one sequence per row):
        steps need fewer, as many as their packing gives (:class:`pretrain.data.StepSampler`)."""
        if self.data.micro_batch_size == AUTO:
            raise ValueError("data.micro_batch_size auto is resolved before the batch arithmetic is asked for")
        per_step = self.data.micro_batch_size * world_size
        if self.data.packing:
            return -(-self.deepspeed.global_batch_size // per_step)
        return self.deepspeed.global_batch_size // per_step


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``a.b=value`` sets raw["a"]["b"] to the YAML value of ``value``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.field=value")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: sections merge, values of ``extra`` win."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(paths: str | list[str], overrides: list[str] | None = None) -> TrainConfig:
    """YAML files merged in order (a recipe, then e.g. configs/deepspeed/zero3.yaml), then overrides.

    A field that fails validation is blamed on the override that set it, else on the files.
    """
    paths = [paths] if isinstance(paths, str) else paths
    raw: dict[str, Any] = {}
    for path in paths:
        try:
            raw = merge(raw, yaml.safe_load(Path(path).read_text()) or {})
        except OSError as e:
            raise ConfigError(f"config {path}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path}: not valid YAML ({e})") from e
    overrides = overrides or []
    raw = apply_overrides(raw, overrides)
    by_key = {item.split("=", 1)[0].strip(): item for item in overrides}
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if not field:  # a check across fields: its message names them
                problems.append(msg)
                continue
            source = next((f"override {by_key[k]}" for k in by_key
                           if field == k or field.startswith(k + ".") or k.startswith(field + ".")),
                          f"config {' + '.join(paths)}")
            problems.append(f"{source}: {field}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def micro_batch_sizes(global_batch: int, world_size: int, packing: bool = False) -> list[int]:
    """Micro-batch sizes (rows) the batch arithmetic allows at ``world_size`` ranks, ascending: divisors of
    the per-rank batch; packed, any size up to it (steps take as many micro-batches as their packing needs)."""
    per_rank = -(-global_batch // world_size)
    if packing:
        return list(range(1, per_rank + 1))
    return [m for m in range(1, per_rank + 1) if global_batch % (m * world_size) == 0]


def valid_micro_batches(global_batch: int, world_size: int, wanted: int) -> list[int]:
    """The micro-batch sizes nearest ``wanted`` (one below, one above) that divide ``global_batch`` over
    ``world_size`` ranks: what a run moved to another number of ranks can use."""
    fits = micro_batch_sizes(global_batch, world_size)
    below = [m for m in fits if m < wanted]
    above = [m for m in fits if m > wanted]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def check_against(cfg: TrainConfig, data: DatasetInfo, world_size: int, on_gpu: bool = True) -> None:
    """Checks that need the data, the world and the device: batch arithmetic, splits, precision."""
    problems = []
    if cfg.deepspeed.precision == "fp16" and not on_gpu:
        problems.append("deepspeed.precision fp16 needs a GPU (DeepSpeed's CPU accelerator has no fp16): "
                        "use bf16 or fp32 on CPU")
    if cfg.logging.count_host_syncs and not on_gpu:
        problems.append("logging.count_host_syncs counts what CUDA reports and needs a GPU: on CPU, "
                        "python -m bench.host_syncs counts the synchronising calls")
    auto = cfg.data.micro_batch_size == AUTO
    if auto and not on_gpu:
        problems.append("data.micro_batch_size auto measures the GPU's memory and needs a GPU: give a number on CPU")
    padded = not cfg.data.packing  # packed steps take as many micro-batches as they need
    if padded and auto and cfg.deepspeed.global_batch_size % world_size:  # auto chooses a size that divides
        problems.append(f"deepspeed.global_batch_size {cfg.deepspeed.global_batch_size} does not divide into "
                        f"{world_size} ranks")
    elif padded and not auto and cfg.deepspeed.global_batch_size % (cfg.data.micro_batch_size * world_size):
        valid = valid_micro_batches(cfg.deepspeed.global_batch_size, world_size, cfg.data.micro_batch_size)
        problems.append(
            f"deepspeed.global_batch_size {cfg.deepspeed.global_batch_size} is not a multiple of "
            f"data.micro_batch_size x world size = {cfg.data.micro_batch_size} x {world_size}"
            + (f"; nearest valid data.micro_batch_size at {world_size} ranks: {' or '.join(map(str, valid))}"
               if valid else f"; no micro-batch size fits {world_size} ranks")
        )
    if cfg.data.train_split not in data.splits:
        problems.append(f"data.train_split {cfg.data.train_split!r}: the dataset has {list(data.splits)}")
    elif data.rows(cfg.data.train_split) == 0:
        problems.append(f"data.path {cfg.data.path}: the {cfg.data.train_split} split has no rows")
    if cfg.eval.every_steps and data.rows(cfg.data.eval_split) == 0:
        problems.append(
            f"eval.every_steps {cfg.eval.every_steps}: the dataset has no rows in split {cfg.data.eval_split!r} "
            "(preprocess with --validation-fraction, or set eval.every_steps=0)"
        )
    if cfg.deepspeed.offload_optimizer and cfg.deepspeed.zero_stage == 0:
        problems.append("deepspeed.offload_optimizer needs zero_stage 1, 2 or 3")
    if problems:
        raise ConfigError("configuration does not fit the data or the world:\n  " + "\n  ".join(problems))


def resolved(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The configuration as run: every field, plus what follows from the world size."""
    data = cfg.model_dump(mode="json")
    data["resolved"] = {"world_size": world_size, "gradient_accumulation_steps": cfg.accumulation_steps(world_size)}
    return data
