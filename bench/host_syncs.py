"""Host synchronisations in the training step, by who asks for them.

    python -m bench.host_syncs --config configs/tiny-cpu.yaml data.path=DATA [section.field=value ...]

Runs the real trainer (``pretrain.run.train``) in this process on one rank and counts, while
steps train, the operators that make the host wait for the device on a GPU: ``.item()``,
``bool()``, ``float()`` (``aten._local_scalar_dense``), ``nonzero``, ``masked_select``,
boolean-mask indexing and ``repeat_interleave`` without its output size. Logging, evaluation,
checkpointing (with its check for a non-finite loss) and the stop-signal check (every
``STOP_CHECK_EVERY`` steps) are left out: they read the host on purpose. Each call is put down to the innermost frame of the project
(``pretrain/``, ``preprocess/``), else of DeepSpeed, else "other" (torch itself). On CPU nothing
waits, but the same calls would on a GPU: the count is what matters. Prints JSON: the steps
counted, the calls per step by source, each call site, and how often the stop signal was checked;
on a GPU also every warning of ``torch.cuda.set_sync_debug_mode("warn")``, by caller.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest.mock import patch

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
OURS = (str(ROOT / "pretrain") + "/", str(ROOT / "preprocess") + "/")
HERE = str(Path(__file__).resolve())
ALWAYS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.nonzero_static.default",
          "aten.masked_select.default", "aten.item.default"}


def synchronises(func, args, kwargs) -> bool:
    name = str(func)
    if name in ALWAYS:
        return True
    if name.startswith("aten.index.Tensor") or name.startswith("aten.index_put"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
        return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)
    if name.startswith("aten.repeat_interleave.Tensor"):
        return kwargs.get("output_size") is None and (len(args) < 2 or args[-1] is None)
    return False


def source() -> str:
    """``project|deepspeed|other: file:line`` of the innermost frame that is not torch's or this file's."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        f = frame.filename
        if f == HERE:
            continue
        if f.startswith(OURS):
            return f"project: {Path(f).relative_to(ROOT)}:{frame.lineno}"
        if "/deepspeed/" in f:
            return f"deepspeed: {f.split('/deepspeed/', 1)[1]}:{frame.lineno}"
    return "other"


class SyncCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.paused = 0
        self.sites: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused and synchronises(func, args, kwargs):
            self.sites[f"{source()} ({func})"] += 1
        return func(*args, **kwargs)

    @contextmanager
    def pause(self):
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1


def run(argv: list[str]) -> dict:
    """``python -m pretrain``'s training with its arguments (``--config`` and overrides), counted."""
    from preprocess import logs
    from pretrain.checkpoint import CheckpointManager
    from pretrain.config import load_config
    from pretrain.distributed import StopSignal, world_from_env
    from pretrain.evaluation import Evaluator
    from pretrain.run import train
    from pretrain.trainer import Trainer

    logs.setup()
    configs, overrides, it = [], [], iter(argv)
    for a in it:
        configs.append(next(it)) if a == "--config" else overrides.append(a)
    cfg = load_config(configs, overrides)
    counter = SyncCounter()
    counter.paused = 1  # on inside Trainer.train only: set-up and teardown left out
    calls: Counter[str] = Counter()

    def wrap(fn, counting: int, name: str):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            counter.paused -= counting
            try:
                return fn(*args, **kwargs)
            finally:
                counter.paused += counting
        return wrapper

    wrapped = {(Trainer, "train"): 1, (Trainer, "train_step"): 0, (Trainer, "log"): -1, (Evaluator, "run"): -1,
               (CheckpointManager, "save"): -1, (Trainer, "check_finite"): -1, (StopSignal, "agreed"): -1,
               (Trainer, "open_batches"): -1, (Trainer, "roll_back"): -1}
    cuda_syncs: Counter[str] = Counter()
    with ExitStack() as stack:
        for (cls, name), counting in wrapped.items():
            stack.enter_context(patch.object(cls, name, wrap(getattr(cls, name), counting, name)))
        if torch.cuda.is_available():
            stack.enter_context(cuda_sync_warnings(counter, cuda_syncs))
        with counter:
            train(cfg, world_from_env())
    n = max(1, calls["train_step"])
    by_source: Counter[str] = Counter()
    for site, count in counter.sites.items():
        by_source[site.split(":", 1)[0]] += count
    return {"config": configs + overrides, "steps": calls["train_step"],
            "per_step": {k: round(v / n, 2) for k, v in sorted(by_source.items())},
            "sites": dict(counter.sites.most_common()), "stop_checks": calls["agreed"],
            "finite_checks": calls["check_finite"],
            **({"cuda_sync_warnings": dict(cuda_syncs.most_common())} if torch.cuda.is_available() else {})}


@contextmanager
def cuda_sync_warnings(counter: SyncCounter, sites: Counter[str]):
    """On a GPU, CUDA's own account too: ``torch.cuda.set_sync_debug_mode("warn")`` warns at every
    synchronising call; each warning, while steps train, is put down to its caller like the counts."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            if not counter.paused:
                sites[source()] += 1
            return
        shown(message, category, filename, lineno, file, line)

    torch.cuda.set_sync_debug_mode("warn")
    warnings.filterwarnings("always", message=".*synchroniz.*")
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
        torch.cuda.set_sync_debug_mode("default")


def main() -> None:
    result = run(sys.argv[1:])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
