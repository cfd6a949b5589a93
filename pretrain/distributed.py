"""The process's place among the ranks, and the one place that sets up the process environment.

* :func:`world_from_env` reads RANK / WORLD_SIZE / LOCAL_RANK as torchrun and DeepSpeed's
  launcher set them; under ``srun`` it fills them from Slurm's ``SLURM_PROCID``,
  ``SLURM_NTASKS`` and ``SLURM_LOCALID`` (DeepSpeed's own discovery does not read those),
  with ``MASTER_ADDR`` the first host of the job's node list. These variables are written
  into ``os.environ`` because ``torch.distributed``'s ``env://`` rendezvous reads them there.
* :func:`init_distributed` picks the device (one GPU per local rank) and the backend (NCCL on
  GPU, gloo on CPU), names the accelerator for DeepSpeed (``DS_ACCELERATOR``) and starts the
  process group through DeepSpeed; :func:`end_distributed` ends it after training.
* :class:`StopSignal`: SIGTERM / SIGUSR1 (Slurm sends one before the time limit) agreed by
  all ranks, so every rank checkpoints at the same step.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int


def world_from_env() -> World:
    """RANK/WORLD_SIZE/LOCAL_RANK, filled from Slurm's variables when launched by srun."""
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env:
        env["RANK"] = env["SLURM_PROCID"]
        env["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1")
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        if "MASTER_ADDR" not in env:
            env["MASTER_ADDR"] = first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000))
    if "RANK" not in env and "MASTER_PORT" not in env:
        # a process started on its own is the only rank: a free port, so that two such runs on
        # one machine (the demo beside another training) do not both claim torch's default 29500
        env["MASTER_PORT"] = str(free_port())
    env.setdefault("RANK", "0")
    env.setdefault("WORLD_SIZE", "1")
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    return World(int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"]))


def free_port() -> int:
    """A TCP port free on this host now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list such as ``node[03-05,07],other``."""
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        return prefix + rest.split("-")[0].split(",")[0].rstrip("]")
    return head


def init_distributed(world: World, timeout_minutes: int) -> None:
    """Bind this rank to its GPU (if any) and start the process group (NCCL on GPU, gloo on CPU)."""
    on_gpu = torch.cuda.is_available()
    # Name the accelerator: DeepSpeed otherwise probes for one and warns on every CPU rank.
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if on_gpu else "cpu")
    import deepspeed

    if on_gpu:
        torch.cuda.set_device(world.local_rank)
    else:
        _skip_shm_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", timeout=timedelta(minutes=timeout_minutes))


def end_distributed() -> None:
    """End the process group once training has returned and released its engine, while the
    interpreter is whole. A process group, or a collective's handle, that lives on into interpreter
    shutdown is destroyed there: gloo's worker threads then free tensors without a Python to free
    them in, and the process aborts (``terminate called without an active exception``, exit -6, a
    finished job that a batch script reads as failed); NCCL warns of leaked communicators.

    So: collect what training left in reference cycles (DeepSpeed's engine holds its optimizer and
    their collectives' handles in cycles), wait until every rank is here (no rank closes its
    connections while another still uses them), destroy the groups, and collect again so that their
    C++ side, threads included, is torn down now rather than at exit."""
    if not dist.is_initialized():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    gc.collect()


def _skip_shm_comm_op() -> None:
    """DeepSpeed JIT-builds its shared-memory all-reduce (~30 s) whenever communication
    starts on the CPU accelerator; only inference uses it. Declare it unavailable."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class StopSignal:
    """SIGTERM or SIGUSR1: finish the step, checkpoint, exit cleanly. Ranks agree through a
    collective on ``device`` (NCCL has no CPU tensors), so all stop at the same step."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.received: int | None = None
        self.device = device
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def agreed(self) -> bool:
        flag = torch.tensor([1 if self.received else 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
