"""Checkpoints that count only once fully written.

Each checkpoint is a DeepSpeed checkpoint directory ``step_XXXXXXXX`` under the run's
``checkpoints/``. After every rank has written its part, rank 0 writes a
``COMPLETE`` marker holding the training state (global step, samples seen); a
directory without the marker (a job killed mid-save) is ignored with a warning. The
last ``keep_last`` complete checkpoints are kept.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch.distributed as dist

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

log = logging.getLogger("pretrain")
MARKER = "COMPLETE"


class CheckpointManager:
    def __init__(self, root: Path, keep_last: int, rank: int):
        self.root, self.keep_last, self.rank = root, keep_last, rank

    @staticmethod
    def tag(step: int) -> str:
        return f"step_{step:08d}"

    def complete(self) -> list[Path]:
        if not self.root.exists():
            return []
        found = []
        for d in sorted(self.root.glob("step_*")):
            if (d / MARKER).exists():
                found.append(d)
            else:
                log.warning("checkpoint %s has no %s marker (interrupted save): ignored", d, MARKER)
        return found

    def save(self, engine: DeepSpeedEngine, state: dict) -> Path:
        tag = self.tag(state["step"])
        engine.save_checkpoint(str(self.root), tag=tag, client_state={"trainer": state})
        dist.barrier()
        path = self.root / tag
        if self.rank == 0:
            (path / MARKER).write_text(json.dumps(state, sort_keys=True) + "\n")
            for old in self.complete()[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return path

    def load_latest(self, engine: DeepSpeedEngine) -> dict | None:
        """Restore the newest complete checkpoint into ``engine``; its training state, or None."""
        done = self.complete()
        if not done:
            return None
        path = done[-1]
        _, client = engine.load_checkpoint(str(self.root), tag=path.name)
        if client is None:
            raise RuntimeError(f"checkpoint {path} could not be loaded")
        return client["trainer"]
