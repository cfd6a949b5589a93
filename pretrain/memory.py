"""The memory of one training step on each GPU, predicted on a CPU: what ``python -m pretrain plan`` adds up.

Two kinds of memory, each a list of named :class:`Part` s:

* **model states**, from the parameter count and DeepSpeed's layout for the run's ZeRO stage,
  precision and offload (:func:`model_states`): the 16-bit (or fp32) weights the model computes
  with, the fp32 master copy and the two moments of AdamW or LAMB (partitioned over the ranks from
  ZeRO-1), the gradients (partitioned from ZeRO-2, with the bucket they are reduced through), the
  fp32 gradient partition the update reads, and one partition-sized temporary of the update;
* **the step's own tensors**, traced (:func:`traced_step`): the model the trainer builds, at the
  run's precision and activation checkpointing, runs its forward, loss and backward on a worst-case
  micro-batch (:func:`pretrain.fit.worst_case_rows`) made of fake tensors, which have shapes and no
  data; a dispatch mode adds up the bytes of every tensor the step allocates while it is alive and
  keeps the highest sum: activations, their gradients, the temporaries, and the weights' gradients
  where the stage keeps them whole. For a GPU the attention is FlashAttention's
  (:func:`pretrain.attention.planned_flash`: what it keeps is O(B S H), where the CPU's unfused
  path with dropout keeps B x heads x S^2 probabilities and masks), and each allocation is rounded
  up to the CUDA caching allocator's 512 bytes.

The peak is the larger of two moments: the end of the backward (states without the update's
temporaries, plus the traced peak) and the optimizer's update (states, whole; the activations are
gone). Encoder layers are alike, so a trace of one group of ``k`` layers (``k``: the checkpointing
interval, else 1) and of two groups gives every depth by adding groups.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pretrain.attention import planned_flash
from pretrain.model import BertForPreTraining, set_activation_checkpointing
from pretrain.model_config import BertConfig

BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's reduce_bucket_size default (elements): ZeRO-2/3 reduce through it
GPU_BLOCK = 512  # bytes: the CUDA caching allocator rounds every allocation up to a multiple of this
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Part:
    name: str
    bytes: float
    note: str = ""


@dataclass(frozen=True)
class Shape:
    """What a step's memory depends on, besides the model."""

    micro_batch: int
    seq_len: int
    predictions: int  # masked positions a sequence (the dataset's max_predictions_per_seq)
    precision: str  # fp32, bf16, fp16
    checkpointing: int  # model.activation_checkpointing: 0 off, k every k-th layer
    packed: bool = False
    max_per_row: int = 3
    gpu: bool = True  # FlashAttention and the allocator's rounding; False: as this CPU runs it


@dataclass(frozen=True)
class States:
    """Where the model states live, per rank."""

    world: int
    zero_stage: int
    precision: str
    offload: bool


def has_master_copy(precision: str, zero_stage: int) -> bool:
    """Whether DeepSpeed keeps an fp32 copy of the weights apart from the ones the model computes with: at
    16-bit precision, and from ZeRO-1 at fp32 too (each rank's partition, cloned)."""
    return precision != "fp32" or zero_stage >= 1


def model_states(params: int, largest_layer: int, s: States) -> tuple[list[Part], list[Part]]:
    """(parts held through the backward, parts added for the optimizer's update), bytes per rank."""
    w, n = BYTES[s.precision], s.world
    opt_n = n if s.zero_stage >= 1 else 1  # optimizer state partitioned from ZeRO-1
    held: list[Part] = []
    if s.zero_stage == 3:
        held.append(Part("weights", params * w / n + 2 * largest_layer * w,
                         f"{s.precision}, 1/{n} of them, plus two layers gathered (computing and prefetched)"))
    else:
        held.append(Part("weights", params * w, f"{s.precision}, whole on every rank"))
    on_gpu_optimizer = not s.offload
    master = has_master_copy(s.precision, s.zero_stage)
    if on_gpu_optimizer and master:
        held.append(Part("fp32 master weights", 4 * params / opt_n, f"1/{opt_n} of them"))
    if on_gpu_optimizer:
        held.append(Part("optimizer moments", 8 * params / opt_n, f"two fp32 moments, 1/{opt_n} of them"))
    update: list[Part] = []
    if s.zero_stage >= 2:
        held.append(Part("gradients", params * w / n + min(BUCKET_ELEMENTS, params) * w,
                         f"1/{n} of them, plus the reduce bucket"))
    else:
        update.append(Part("gradients", params * w, "whole on every rank (in the trace during the backward)"))
    if on_gpu_optimizer:
        if master:
            update.append(Part("fp32 gradient partition", 4 * params / opt_n, "what the update reads"))
        update.append(Part("update temporaries", 4 * params / opt_n, "one fp32 partition-sized buffer"))
    return held, update


class _LiveBytes(TorchDispatchMode):
    """The bytes of the tensors allocated under it and still alive, and their highest sum."""

    def __init__(self, block: int = 1, existing: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.block, self.now, self.peak = block, 0, 0
        self._live: set[int] = set()
        # tensors made before (weights, inputs): a view of one (a weight's transpose) allocates nothing
        self._outside = {t.untyped_storage()._cdata for t in existing}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._count(t.untyped_storage())
        return out

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        if key in self._live or key in self._outside:
            return
        size = -(-storage.nbytes() // self.block) * self.block
        self._live.add(key)
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._live.discard(key)
        self.now -= size


def traced_step(config: BertConfig, shape: Shape, keep_gradients: bool) -> float:
    """The highest sum of live bytes the step's forward, loss and backward allocate (see the module doc)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    k = max(1, shape.checkpointing)
    one, two = (_trace(config, shape, layers, keep_gradients, FakeTensorMode) for layers in (k, 2 * k))
    groups = config.num_hidden_layers / k
    return one + (groups - 1) * (two - one)


def _trace(config: BertConfig, shape: Shape, layers: int, keep_gradients: bool, fake_mode) -> int:
    from pretrain.data import Collator, layout_for
    from pretrain.fit import worst_case_rows

    config = BertConfig(**{**config.__dict__, "num_hidden_layers": layers})
    rows = shape.micro_batch
    info = _Info(shape.seq_len, config.vocab_size, shape.predictions)
    layout = layout_for(info, rows, shape.seq_len, shape.max_per_row) if shape.packed else layout_for(info)
    batch = Collator(layout)(worst_case_rows(rows, info, layout))["inputs"]
    default = torch.get_default_dtype()
    with fake_mode(allow_non_fake_inputs=True) as mode:
        torch.set_default_dtype(DTYPES[shape.precision])
        try:
            model = BertForPreTraining(config)
        finally:
            torch.set_default_dtype(default)
        set_activation_checkpointing(model, shape.checkpointing)
        if not keep_gradients:  # ZeRO-2/3: each gradient leaves for its bucket once accumulated
            for p in model.parameters():
                p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
        inputs = {key: (mode.from_tensor(v) if isinstance(v, torch.Tensor) else v) for key, v in batch.items()}
        existing = (*model.parameters(), *model.buffers(), *(v for v in inputs.values() if isinstance(v, torch.Tensor)))
        live = _LiveBytes(GPU_BLOCK if shape.gpu else 1, existing)
        with live, (planned_flash() if shape.gpu else contextlib.nullcontext()):
            out = model(**inputs)
            out.loss.backward()
            del out
    return live.peak


@dataclass(frozen=True)
class _Info:
    """What :func:`pretrain.fit.worst_case_rows` and :func:`pretrain.data.layout_for` read of a dataset."""

    max_seq_length: int
    vocab_size: int
    max_predictions_per_seq: int

    def token_id(self, token: str) -> int:
        return 0  # [PAD]: which id pads does not change a shape


def parameter_counts(config: BertConfig) -> tuple[int, int]:
    """(parameters, the largest encoder layer's or the embeddings' parameters), without building the model."""
    return _parameter_counts(tuple(sorted(config.shape().items())))


@functools.lru_cache(maxsize=8)
def _parameter_counts(shape: tuple[tuple[str, int], ...]) -> tuple[int, int]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    config = BertConfig(**dict(shape))
    with FakeTensorMode():
        model = BertForPreTraining(BertConfig(**{**config.__dict__, "num_hidden_layers": 1}))
        per_layer = sum(p.numel() for p in model.bert.encoder.layer[0].parameters())
        total = sum(p.numel() for p in model.parameters()) + (config.num_hidden_layers - 1) * per_layer
        embeddings = sum(p.numel() for p in model.bert.embeddings.parameters())
    return total, max(per_layer, embeddings)


def step_memory(config: BertConfig, shape: Shape, states: States) -> tuple[list[Part], str]:
    """The parts at the step's peak (they add up to it) and the moment it is at: "backward" or "update"."""
    params, largest = parameter_counts(config)
    held, update = model_states(params, largest, states)
    traced = traced_step(config, shape, keep_gradients=states.zero_stage < 2)
    attention = ("FlashAttention: output and fp32 log-sum-exp kept" if shape.gpu
                 else "this CPU's attention path")
    at_backward = held + [Part("activations and temporaries", traced,
                               "traced forward, loss and backward" + (", with the weights' gradients"
                                                                     if states.zero_stage < 2 else "")
                               + f"; {attention}")]
    at_update = held + update
    peak = max((at_backward, "backward"), (at_update, "update"), key=lambda x: sum(p.bytes for p in x[0]))
    return peak[0], peak[1]

