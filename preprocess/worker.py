"""A local Beam worker process: started with the project's logging in place, and started warm.

Beam's local runner starts each multi-processing worker as ``python -m
apache_beam.runners.worker.sdk_worker_main``. Importing that module imports Beam's I/O
connectors, one of which logs a warning on the root logger when Google's clients are absent
("apitools not found"); with no handler installed yet, that call installs Python's default
one, and every routine line the worker logs before reading its options ("Logging handler
created.", "No semi_persistent_directory found") then reaches the terminal. Here a handler
for errors is installed first, so only a worker's errors reach stderr directly; everything
else goes, as Beam intends, through the worker's log stream to the runner (quieted by
:mod:`preprocess.logs`). :class:`preprocess.runners.LocalRunner` starts workers this way
unless ``--verbose``. Once the runner is done with it, the worker leaves through
:func:`preprocess.exiting.exit_now`, without the interpreter's teardown.

**Warm workers.** A worker spends ~0.9 s importing Beam and the stages' libraries, and the
runner starts its workers only once the job has imported Beam and built the pipeline (~1.7 s
in): on a small job a fifth of the run went to starting up one after the other.
:func:`warm_pool` starts the workers' processes when the job starts, so that they import while
the job does (:func:`warm_count` says how many, from the arguments alone). Each warm process
waits on a Unix socket of its own, made by the pool. The process Beam starts (``python -m
preprocess.worker``, a stdlib-only client here, ~40 ms) claims a free socket, hands its
environment (the runner's addresses, the worker's id and options) to the warm process, which
then runs the worker exactly as a cold one would, and waits for its exit status. A client that
finds no free warm process, or one that died before taking the hand-off, runs the worker
itself. Warm processes that are never claimed leave when the pool closes or, should the job
die, within a second of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from preprocess.exiting import exit_now

POOL_ENV = "PREPROCESS_WARM_WORKERS"  # the pool's directory, inherited by the runner's workers
ACCEPTED = b"accepted\n"


def warm_count(argv: list[str]) -> int:
    """Workers the job's arguments will start on the local runner through :mod:`preprocess.worker`:
    the decision of :func:`preprocess.runners.pipeline_options`, made without importing Beam (0 for
    any other runner, an in-process run, or ``--verbose``)."""
    if "--verbose" in argv or _value(argv, "--runner") is not None:
        return 0
    try:
        workers = int(_value(argv, "--direct_num_workers") or 0) or os.cpu_count() or 1
    except ValueError:
        return 0  # the options' check says what is wrong
    mode = _value(argv, "--direct_running_mode") or ("multi_processing" if workers > 1 else "in_memory")
    return workers if mode == "multi_processing" else 0


def _value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag:
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class WarmPool:
    directory: Path
    pids: tuple[int, ...]  # the warm processes

    def claimed(self) -> int:
        """How many of them a worker has claimed so far."""
        return len(list(self.directory.glob("*.claimed")))


@contextlib.contextmanager
def warm_pool(count: int) -> Iterator[WarmPool | None]:
    """``count`` warm worker processes for the runner to claim while the block runs (None for none).
    Every one still running at the end is stopped."""
    if count < 1:
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="preprocess-warm-"))
    procs = []
    try:
        for slot in range(count):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
                listener.bind(str(directory / f"{slot}.sock"))
                listener.listen(1)  # a client may connect before the process is ready: it waits
                procs.append(subprocess.Popen([sys.executable, "-m", "preprocess.worker", "--warm",
                                               str(listener.fileno()), str(os.getpid())],
                                              pass_fds=[listener.fileno()]))
        os.environ[POOL_ENV] = str(directory)
        yield WarmPool(directory, tuple(p.pid for p in procs))
    finally:
        os.environ.pop(POOL_ENV, None)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _quiet_root_logger() -> None:
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _run_worker() -> None:
    """The SDK harness, in this process, with the environment as it is now; returns when the runner is done."""
    from apache_beam.runners.worker import sdk_worker_main

    from preprocess.runners import restore_malloc_thresholds

    restore_malloc_thresholds()  # glibc's steady state from the first array on
    sdk_worker_main.main(sys.argv)  # returns once the runner is done with this worker, its DoFns torn down


def _serve_warm(listener_fd: int, parent: int) -> None:
    """A warm process: import, then wait for a client's environment and run the worker with it."""
    listener = socket.socket(fileno=listener_fd)
    _quiet_root_logger()
    from apache_beam.runners.worker import sdk_worker_main  # noqa: F401  (what a cold worker imports first)

    import preprocess.pipeline  # noqa: F401  (the modules the stages' DoFns are unpickled into)

    listener.settimeout(1.0)
    while True:
        try:
            conn, _ = listener.accept()
            break
        except TimeoutError:
            if os.getppid() != parent:  # the job is gone: nobody will claim this process
                exit_now(0)
    listener.close()
    conn.settimeout(None)
    with conn, conn.makefile("rb") as stream:
        env = json.loads(stream.readline())
        conn.sendall(ACCEPTED)
        os.environ.clear()
        os.environ.update(env)
        code = 1
        try:
            _run_worker()
            code = 0
        finally:
            conn.sendall(b"%d\n" % code)
    exit_now(code)


def _hand_off(directory: Path) -> int | None:
    """Run this worker in a free warm process of the pool: its exit status, or None when none took it."""
    for path in sorted(directory.glob("*.sock")):
        try:
            os.close(os.open(f"{path}.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue  # another worker's
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(str(path))
                conn.sendall(json.dumps(dict(os.environ)).encode() + b"\n")
                with conn.makefile("rb") as stream:
                    if stream.readline() != ACCEPTED:
                        continue  # it died before taking the hand-off: try the next, or start cold
                    status = stream.readline().strip()
            return int(status) if status.isdigit() else 1  # no status: the warm process died mid-run
        except OSError:
            continue
    return None


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--warm":
        _serve_warm(int(sys.argv[2]), int(sys.argv[3]))
    pool = os.environ.get(POOL_ENV)
    if pool:
        status = _hand_off(Path(pool))
        if status is not None:
            exit_now(status)
    _quiet_root_logger()
    _run_worker()
    exit_now(0)


if __name__ == "__main__":
    main()
