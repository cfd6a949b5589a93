"""Checkpoints that count only once fully written, and are verified before they are used.

Each checkpoint is a DeepSpeed checkpoint directory ``step_XXXXXXXX`` under the run's
``checkpoints/``. After every rank has written its part, rank 0 writes a ``COMPLETE``
marker holding the training state (global step, samples seen) and every file of the
checkpoint with its size and CRC-32; a directory without the marker (a job killed
mid-save) is ignored with a warning. The last ``keep_last`` complete checkpoints are kept.

Before a checkpoint is loaded, each listed file is checked: present, of the size written,
and of the checksum written. The checksums are computed (at save) and checked (at load)
with the files shared out among the ranks, each rank reading ``1/world`` of them
(``zlib.crc32``: 1.6 GB/s on one core of the project's CPU machine, from the page cache; a
BERT-Large LAMB checkpoint of ~4.7 GB costs ~3 s of one rank, less spread over several). A
checkpoint that fails is set aside, moved to ``checkpoints/set_aside/`` (never counted by
``keep_last``, never written into by a later save), with a warning naming the file, and the
previous complete one is used.

A checkpoint records the shape of the run that wrote it: its world size and ZeRO stage.
ZeRO-1/2/3 partition the optimizer state by rank, so a checkpoint resumes as written only at
that shape. At another world size or stage it is converted once by DeepSpeed's
``ds_to_universal`` into its universal format (every parameter's fp32 master weights and
moments whole, one directory each), cached in ``universal/`` inside the checkpoint, and
loaded with ``checkpoint.load_universal``. ZeRO-0 keeps the whole optimizer state with the
model on every rank: it resumes at any world size as written, and converts to no other stage.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

log = logging.getLogger("pretrain")
MARKER = "COMPLETE"
SET_ASIDE = "set_aside"
UNIVERSAL = "universal"
CHUNK = 1 << 24


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed in this run's shape, or whose conversion failed."""


@dataclass(frozen=True)
class Shape:
    """What a ZeRO checkpoint's layout depends on: the data-parallel world size and the ZeRO stage."""

    world_size: int
    zero_stage: int

    def __str__(self) -> str:
        return f"{self.world_size} rank{'s' if self.world_size > 1 else ''} at ZeRO-{self.zero_stage}"


@dataclass(frozen=True)
class Resume:
    """The checkpoint a run resumes from: where DeepSpeed loads it from, and whether as universal."""

    path: Path
    written_by: Shape
    universal: bool

    @property
    def load_dir(self) -> Path:
        return self.path if self.universal else self.path.parent

    @property
    def tag(self) -> str:
        return UNIVERSAL if self.universal else self.path.name


def crc32_of(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def files_of(path: Path) -> list[str]:
    """Every file of a checkpoint directory but its marker, as sorted relative paths."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != MARKER)


def size_problem(path: Path, listed: dict[str, dict[str, Any]]) -> str | None:
    """The first listed file that is missing or not of its written size; None if none."""
    for rel, want in listed.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != want["size"]:
            return f"{rel} is {f.stat().st_size} bytes, {want['size']} were written"
    return None


def _across_ranks(items: list[str], fn: Callable[[str], Any]) -> dict[str, Any]:
    """``fn`` of every item, each rank computing a share, every rank receiving all."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return {i: fn(i) for i in items}
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = {i: fn(i) for i in items[rank::world]}
    gathered: list[dict[str, Any]] = [{} for _ in range(world)]
    dist.all_gather_object(gathered, mine)
    return {k: v for part in gathered for k, v in part.items()}


def _from_rank_0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class CheckpointManager:
    def __init__(self, root: Path, keep_last: int, rank: int, shape: Shape | None = None):
        """``shape``: the run's, for saving and resuming; readers of finished checkpoints need none."""
        self.root, self.keep_last, self.rank, self.shape = root, keep_last, rank, shape

    @staticmethod
    def tag(step: int) -> str:
        return f"step_{step:08d}"

    def written(self) -> list[Path]:
        """Every checkpoint directory, complete or not, oldest first."""
        return sorted(self.root.glob("step_*")) if self.root.is_dir() else []

    def complete(self) -> list[Path]:
        found = []
        for d in self.written():
            if (d / MARKER).exists():
                found.append(d)
            else:
                log.warning("checkpoint %s has no %s marker (interrupted save): ignored", d, MARKER)
        return found

    def save(self, engine: DeepSpeedEngine, state: dict) -> Path:
        from deepspeed.checkpoint.constants import (
            UNIVERSAL_CHECKPOINT_INFO,
            UNIVERSAL_CHECKPOINT_VERSION_KEY,
            UNIVERSAL_CHECKPOINT_VERSION_VALUE,
        )

        assert self.shape is not None, "saving needs the run's shape"
        tag = self.tag(state["step"])
        # what ds_to_universal needs to convert this checkpoint for another shape
        universal_info = {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}
        engine.save_checkpoint(str(self.root), tag=tag,
                               client_state={"trainer": state, UNIVERSAL_CHECKPOINT_INFO: universal_info})
        _barrier()
        path = self.root / tag
        files = _across_ranks(files_of(path), lambda rel: {"size": (path / rel).stat().st_size,
                                                           "crc32": crc32_of(path / rel)})
        if self.rank == 0:
            marker = {**state, "files": files, "shape": vars(self.shape)}
            (path / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
            for old in self.complete()[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return path

    def verify(self, path: Path) -> str | None:
        """What is wrong with a complete checkpoint's files, or None (every rank gets the same answer)."""
        listed = json.loads((path / MARKER).read_text()).get("files")
        if listed is None:
            return None  # written before checkpoints listed their files
        problem = size_problem(path, listed)
        if problem:
            return problem
        names = sorted(listed)
        sums = _across_ranks(names, lambda rel: crc32_of(path / rel))
        bad = [rel for rel in names if sums[rel] != listed[rel]["crc32"]]
        return f"{bad[0]} does not match its checksum" if bad else None

    def set_aside(self, path: Path) -> Path:
        """Move a damaged checkpoint out of the way (rank 0), under a name no save uses."""
        target = self.root / SET_ASIDE / path.name
        n = 0
        while target.exists():
            n += 1
            target = self.root / SET_ASIDE / f"{path.name}-{n}"
        _barrier()  # every rank has chosen the same name before rank 0 takes it
        if self.rank == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
        _barrier()
        return target

    def written_by(self, path: Path) -> Shape:
        """The shape of the run that wrote a checkpoint (this run's, for one from before shapes were recorded)."""
        shape = json.loads((path / MARKER).read_text()).get("shape")
        return Shape(**shape) if shape else self.shape

    def find(self) -> Resume | None:
        """The newest complete, intact checkpoint, ready for this run's shape (converted to the
        universal format, once, where the shape differs), or None: the run starts afresh.
        Call before the engine is built: a universal checkpoint is loaded by an engine built for it."""
        for path in reversed(self.complete()):
            problem = self.verify(path)
            if problem:
                target = self.set_aside(path)
                log.warning("checkpoint %s: %s; set aside as %s, trying the one before", path, problem, target)
                continue
            return self._ready(path, self.written_by(path))
        return None

    def _ready(self, path: Path, old: Shape) -> Resume:
        new = self.shape
        assert new is not None, "resuming needs the run's shape"
        if old == new:
            return Resume(path, old, universal=False)
        if old.zero_stage == 0 or new.zero_stage == 0:
            if old.zero_stage == new.zero_stage:
                log.info("checkpoint %s was written by %s; this run is %s: ZeRO-0 holds the whole optimizer "
                         "state on every rank, so it resumes as written", path.name, old, new)
                return Resume(path, old, universal=False)
            raise CheckpointError(
                f"checkpoint {path} was written at ZeRO-{old.zero_stage}; this run is at ZeRO-{new.zero_stage}: "
                "DeepSpeed's universal checkpoints convert between ZeRO stages 1, 2 and 3 only. Resume with "
                f"deepspeed.zero_stage={old.zero_stage}" + (" (at any world size)" if old.zero_stage == 0 else ""))
        target = path / UNIVERSAL
        if target.is_dir():
            log.info("checkpoint %s was written by %s; this run is %s: loading its universal copy %s",
                     path.name, old, new, target)
        else:
            log.info("checkpoint %s was written by %s; this run is %s: converting it to DeepSpeed's universal "
                     "format (once; cached in %s)", path.name, old, new, target)
            failure = _from_rank_0(self._convert(path) if self.rank == 0 else None)
            if failure:
                raise CheckpointError(f"converting checkpoint {path} to the universal format failed:\n{failure}")
        return Resume(path, old, universal=True)

    def _convert(self, path: Path) -> str | None:
        """``ds_to_universal`` into ``universal.partial/``, renamed to ``universal/`` when done; its
        error output on failure."""
        partial = path / f"{UNIVERSAL}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        workers = str(max(1, min(4, os.cpu_count() or 1)))
        proc = subprocess.run(
            [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(path),
             "--output_folder", str(partial), "--num_extract_workers", workers, "--num_merge_workers", workers,
             "--inject_missing_state"],  # for checkpoints written before the info was saved with them
            capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            return (proc.stdout[-2000:] + proc.stderr[-4000:]).strip()
        _bridge_zero_families(partial)
        # DeepSpeed reads a universal checkpoint's model states (its schedule, step and our client
        # state; the weights come from zero/) under the name the loading run's stage writes:
        # mp_rank_00_... at ZeRO-1/2, zero_pp_rank_0_mp_rank_00_... at ZeRO-3. The converter keeps the
        # writer's names; link the other so that either stage loads the copy.
        names = (partial / "mp_rank_00_model_states.pt", partial / "zero_pp_rank_0_mp_rank_00_model_states.pt")
        for have, want in (names, names[::-1]):
            if have.is_file() and not want.exists():
                os.link(have, want)
        partial.rename(path / UNIVERSAL)
        return None

    def load(self, engine: DeepSpeedEngine, resume: Resume) -> dict:
        """Restore ``resume`` into ``engine`` (built with ``load_universal`` if ``resume.universal``);
        its training state."""
        base = engine.optimizer.optimizer if resume.universal else None  # the optimizer ZeRO wraps
        ours = [{k: v for k, v in g.items() if k not in SCHEDULED} for g in base.param_groups] if base else []
        _, client = engine.load_checkpoint(str(resume.load_dir), tag=resume.tag)
        if client is None:
            raise CheckpointError(f"checkpoint {resume.path} could not be loaded")
        if base is not None:
            _mend_universal_load(base, ours)
        return client["trainer"]


def _bridge_zero_families(universal: Path) -> None:
    """Make a universal checkpoint loadable at ZeRO-1/2 and at ZeRO-3 whichever wrote it.

    DeepSpeed 0.19 writes the global optimizer state (``zero/optimizer_state.pt``) of the two
    families differently and each loader reads only its own: ZeRO-3 reads the step and the
    hyperparameters from a nested ``optimizer_state_dict``; ZeRO-1/2 read ``ds_version`` and a
    ``step.pt`` beside each parameter's moments, and each state file as ``{"param": tensor}`` of
    the parameter's shape, where ZeRO-3 writes a bare flat tensor. Add whichever half is missing;
    the values, per parameter, are the same in both."""
    import deepspeed
    import torch

    zero = universal / "zero"
    path = zero / "optimizer_state.pt"
    sd = torch.load(path, map_location="cpu", weights_only=False)
    params = [d for d in zero.iterdir() if d.is_dir()]
    if "optimizer_state_dict" not in sd:  # written at ZeRO-1/2
        steps = [d / "step.pt" for d in params if (d / "step.pt").is_file()]
        step = torch.load(steps[0], weights_only=False) if steps else 0
        sd["optimizer_state_dict"] = {"state": {0: {"step": step}}, "param_groups": sd["param_groups"]}
    else:  # written at ZeRO-3
        sd.setdefault("ds_version", deepspeed.__version__)
        step = sd["optimizer_state_dict"]["state"][0]["step"]
        states = torch.load(universal / "zero_pp_rank_0_mp_rank_00_model_states.pt", map_location="cpu",
                            weights_only=False)
        shapes = {name: shape for group in states["param_shapes"] for name, shape in group.items()}
        for d in params:
            for f in d.glob("*.pt"):
                value = torch.load(f, map_location="cpu", weights_only=False)
                if torch.is_tensor(value) and f.name != "step.pt":
                    torch.save({"param": value.view(shapes.get(d.name, value.shape))}, f)
            if not (d / "step.pt").exists():
                torch.save(step, d / "step.pt")
    torch.save(sd, path)


SCHEDULED = ("params", "lr", "initial_lr")  # what a loaded checkpoint rightly sets in a parameter group


def _mend_universal_load(optimizer: Any, groups: list[dict]) -> None:
    """Undo two defects of DeepSpeed 0.19's universal load at ZeRO-3, harmless elsewhere: it gives
    every partition's state one shared ``step`` tensor (an optimizer that counts in place then
    counts each step once per partition: wrong bias corrections), and it copies the first
    parameter group's hyperparameters into every group (weight decay on biases and LayerNorms).
    Each state gets its own counter; each group its own hyperparameters."""
    for state in optimizer.state.values():
        if "step" in state and hasattr(state["step"], "clone"):
            state["step"] = state["step"].clone()
    for group, own in zip(optimizer.param_groups, groups, strict=True):
        group.update(own)
