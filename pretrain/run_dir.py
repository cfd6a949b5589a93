"""A run directory: every path in it, and the small records kept there.

``RUN_DIR/``
  ``config.yaml``         the resolved training configuration (with the world size it ran at)
  ``model_config.json``   the model's configuration (transformers' fields), for export
  ``data.json``           which dataset the run trains on, and its vocabulary (file, case, fingerprint)
  ``micro_batch.json``    ``data.micro_batch_size: auto``: the size measured at the run's start, reused
                          on resume (:mod:`pretrain.fit`)
  ``checkpoints/``        ``step_XXXXXXXX/`` DeepSpeed checkpoints (see :mod:`pretrain.checkpoint`)
  ``metrics.jsonl``       one JSON record per logged step or evaluation
  ``metrics-superseded.jsonl``  records of steps a resume went back over (trained again from an
                          earlier checkpoint), moved out of ``metrics.jsonl``
  ``curves.png``          ``python -m pretrain plot``
  ``wandb_run_id``, ``wandb/``  the wandb run this run logs to (kept across resumes)
  ``FINISHED``            written when the schedule's last step is done (batch scripts read it
                          through ``python -m pretrain status``)
  ``export/``             the default target of ``python -m pretrain export``

Nothing else in the project spells these names.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pretrain.model_config import BertConfig


@dataclass(frozen=True)
class DataRef:
    """The dataset a run trains on, as recorded at its start."""

    path: str
    vocab_file: str
    lower_case: bool
    fingerprint: str


def directory_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written to as a directory (existing, or created with its parents), or None."""
    if path.exists():
        if not path.is_dir():
            return "is an existing file, not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else "is not writable"
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"cannot be created: {parent} is not writable"


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    model_config_file = property(lambda self: self.root / "model_config.json")
    data_file = property(lambda self: self.root / "data.json")
    micro_batch_file = property(lambda self: self.root / "micro_batch.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    metrics_superseded = property(lambda self: self.root / "metrics-superseded.jsonl")
    curves = property(lambda self: self.root / "curves.png")
    wandb_id = property(lambda self: self.root / "wandb_run_id")
    finished_file = property(lambda self: self.root / "FINISHED")
    export = property(lambda self: self.root / "export")

    PATHS = ("config", "model_config_file", "data_file", "micro_batch_file", "checkpoints", "metrics",
             "metrics_superseded", "curves", "wandb_id", "finished_file", "export")

    def create(self) -> RunDir:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def supersede_metrics(self, step: int) -> int | None:
        """Move the records of steps after ``step`` (the step a run resumes from) out of ``metrics.jsonl``
        into ``metrics-superseded.jsonl``; the last step they reached, or None when there were none."""
        if not self.metrics.exists():
            return None
        keep, moved, last = [], [], None
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                record_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):  # a record cut short by the end of a process
                moved.append(line)
                continue
            if record_step > step:
                moved.append(line)
                last = max(last or record_step, record_step)
            else:
                keep.append(line)
        if not moved:
            return None
        with open(self.metrics_superseded, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in moved))
        tmp = self.metrics.with_name(self.metrics.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        tmp.replace(self.metrics)
        return last

    def write_config(self, resolved: dict[str, Any]) -> None:
        self.config.write_text(yaml.safe_dump(resolved, sort_keys=False))

    def write_model_config(self, config: BertConfig) -> None:
        self.model_config_file.write_text(json.dumps(config.to_hf_dict(), indent=2, sort_keys=True))

    def model_config(self) -> BertConfig:
        return BertConfig.from_hf_dict(json.loads(self._read(self.model_config_file)))

    def write_data_ref(self, ref: DataRef) -> None:
        self.data_file.write_text(json.dumps(asdict(ref), indent=2))

    def data_ref(self) -> DataRef | None:
        """The recorded dataset, or None for a run that has not started."""
        if not self.data_file.exists():
            return None
        d = json.loads(self._read(self.data_file))
        return DataRef(d["path"], d["vocab_file"], bool(d.get("lower_case", True)), d["fingerprint"])

    def mark_finished(self, state: dict[str, Any]) -> None:
        self.finished_file.write_text(json.dumps(state) + "\n")

    def finished(self) -> dict[str, Any] | None:
        """The final training state if the run has finished, else None."""
        return json.loads(self.finished_file.read_text()) if self.finished_file.exists() else None

    def _read(self, path: Path) -> str:
        try:
            return path.read_text()
        except OSError as e:
            raise FileNotFoundError(f"{path}: {e.strerror}; is {self.root} a run directory "
                                    "(written by python -m pretrain)?") from e
