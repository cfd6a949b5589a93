"""The project's command lines run as their own processes, forked from one that has already imported
torch, TorchDynamo and DeepSpeed.

A one-rank training run is ~5 s of imports before its first step (torch, DeepSpeed, and the
TorchDynamo and Inductor modules that DeepSpeed's optimizer check imports) and a second or two of
work. :func:`run` starts each command in a fresh process forked from multiprocessing's fork server
with those modules preloaded (one server per pytest-xdist worker): a process of its own as
``python -m MODULE ARGS`` would be, with its own environment, working directory, signals, exit code,
stdout and stderr, through the module's own ``main(argv)``, but without the imports; several ranks as
torchrun starts them. What a real interpreter start adds (torchrun's and DeepSpeed's launchers, signals
sent to a run, a killed rank, the exit of a finished run) is tested through real processes
(``subprocess``) elsewhere.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import multiprocessing.connection
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Imported by the fork server once (see module doc): what every training process imports before its
# first step. Not the project itself, nor pyarrow (whose allocator starts a thread at its first use).
PRELOAD = "tests.preloaded"

_context: multiprocessing.context.BaseContext | None = None


def _forkserver() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload([PRELOAD])
    return _context


def _child(module: str, argv: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """In the forked process: ``python -m module *argv`` from its ``main``, stdout and stderr into files."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for path, fd in ((out, 1), (err, 2)):
        f = os.open(path, os.O_WRONLY | os.O_APPEND)  # shared by the ranks
        os.dup2(f, fd)
        os.close(f)
    sys.argv = [module, *argv]
    try:
        code = importlib.import_module(f"{module}.__main__").main(argv)
    finally:
        atexit._run_exitfuncs()  # as the interpreter's exit would; multiprocessing's children skip them
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)


def run(module: str, argv: list[str], env: dict[str, str], cwd: str | Path, ranks: int = 1,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m module *argv`` in ``cwd`` with ``env``: its exit code and its output, as
    ``subprocess.run(..., capture_output=True, text=True)`` gives them.

    With ``ranks`` > 1, that many processes with the environment ``torchrun --nproc_per_node ranks``
    gives each (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``;
    ``MASTER_PORT`` from ``env``), their output interleaved as torchrun's is. As torchrun does, the first
    rank to fail ends the others; the exit code is that rank's."""
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "out"), os.path.join(d, "err")
        Path(out).touch()
        Path(err).touch()
        procs = []
        for rank in range(ranks):
            rank_env = dict(env) if ranks == 1 else {
                **env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(ranks),
                "LOCAL_WORLD_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1"}
            p = _forkserver().Process(target=_child, args=(module, list(argv), rank_env, str(cwd), out, err))
            p.start()
            procs.append(p)
        code = _wait(procs, timeout)
        result = Path(out).read_text(), Path(err).read_text()
        if code is None:
            raise subprocess.TimeoutExpired([module, *argv], timeout, *result)
        return subprocess.CompletedProcess([sys.executable, "-m", module, *argv], code, *result)


def _wait(procs: list, timeout: float) -> int | None:
    """The exit code: 0, or the first failed process's (the others then stopped: SIGTERM, and SIGKILL
    after 30 s); None on the timeout (every process killed)."""
    deadline = time.monotonic() + timeout
    running, code = list(procs), 0
    while running:
        left = deadline - time.monotonic()
        if left <= 0:
            for p in running:
                p.kill()
                p.join()
            return None
        for sentinel in multiprocessing.connection.wait([p.sentinel for p in running], left):
            p = next(p for p in running if p.sentinel == sentinel)
            p.join()
            running.remove(p)
            if p.exitcode != 0 and code == 0:
                code = p.exitcode
                for other in running:
                    other.terminate()
                deadline = min(deadline, time.monotonic() + 30)
    return code
