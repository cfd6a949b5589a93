"""Progress of long commands: a bar on a terminal, one plain line every so often elsewhere.

* :class:`Progress` shows it: a ``tqdm`` bar when the stream is a terminal, else (a batch
  job's log file) one plain line every ``every`` seconds.
* Local preprocessing runs its stages in worker processes while Beam's runner blocks the
  main process, so the workers report through a side channel: :func:`report` adds to this
  process's counters and writes them, at most twice a second, to a small JSON file in the
  directory named by ``PROGRESS_DIR_VARIABLE`` (set by the job for local runs only; worker
  processes inherit it). :class:`JobMonitor`, a thread of the main process, sums the files
  and updates the display.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from typing import IO, Any

PROGRESS_DIR_VARIABLE = "BERT_PIPELINE_PROGRESS_DIR"


class Progress:
    """``done`` of ``total`` with extra fields; tqdm on a terminal, else a line every ``every`` s."""

    def __init__(self, total: float | None, desc: str, unit: str, stream: IO[str] | None = None,
                 every: float = 30.0, clock: Any = time.monotonic):
        self.stream = stream or sys.stderr
        self.desc, self.unit, self.total, self.every, self.clock = desc, unit, total, every, clock
        self.last = clock()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, leave=False)

    def update(self, done: float, force: bool = False, **fields: Any) -> None:
        """Show ``done`` (and ``fields``); without a terminal, only every ``every`` s unless ``force``."""
        if self.bar is not None:
            self.bar.n = done
            self.bar.set_postfix(fields, refresh=False)
            self.bar.refresh()
        elif force or self.clock() - self.last >= self.every:
            self.last = self.clock()
            shown = ", ".join(f"{k} {v}" for k, v in fields.items())
            of = f"/{self.total:g}" if self.total else ""
            print(f"{self.desc}: {done:g}{of} {self.unit}" + (f", {shown}" if shown else ""), file=self.stream,
                  flush=True)

    def write(self, line: str) -> None:
        """A line of output that does not tear the bar (and, without a terminal, delays the next plain
        progress line: the reader has just been told where things stand)."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
            self.last = self.clock()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Counters:
    """This process's counters for one progress directory; DoFns of several threads add to them."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, f"{os.getpid()}.json")
        self.counts: Counter = Counter()
        self.written = 0.0
        self.lock = threading.Lock()

    def add(self, counts: dict[str, int]) -> None:
        with self.lock:
            self.counts.update(counts)
            if time.monotonic() - self.written >= 0.5:
                self.write()

    def write(self) -> None:
        """Replace the file (under the lock). Progress is advisory: a failure here never fails the job."""
        self.written = time.monotonic()
        tmp = f"{self.path}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(self.counts, f)
            os.replace(tmp, self.path)
        except OSError:
            pass


_counters: dict[str, _Counters] = {}


def _current() -> _Counters | None:
    directory = os.environ.get(PROGRESS_DIR_VARIABLE)
    if not directory or not os.path.isdir(directory):
        return None
    if directory not in _counters:
        _counters.clear()  # an earlier job's directory (a process that ran several jobs) is gone
        _counters[directory] = _Counters(directory)
    return _counters[directory]


def report(**counts: int) -> None:
    """Add to this process's progress counters (a no-op unless the job asked for progress)."""
    counters = _current()
    if counters is not None:
        counters.add(counts)


def flush() -> None:
    """Write this process's counters now (at the end of a bundle)."""
    counters = _current()
    if counters is not None:
        with counters.lock:
            counters.write()


def read_counters(directory: str) -> Counter:
    """The sum of every process's counters in ``directory``."""
    total: Counter = Counter()
    for name in os.listdir(directory):
        if name.endswith(".json"):
            try:
                with open(os.path.join(directory, name)) as f:
                    total.update(json.load(f))
            except (OSError, ValueError):
                continue  # being replaced right now
    return total


class JobMonitor(threading.Thread):
    """Polls the workers' counters once a second and shows files read, MB/s, documents, pairs, shards."""

    def __init__(self, directory: str, files: int, shards: int | None, every: float = 30.0,
                 stream: IO[str] | None = None, unit: str = "files"):
        """``files``: the inputs read whole or in parts, ``unit`` says which; ``shards``: None when the
        count follows from the output's size (known once pairing ends)."""
        super().__init__(daemon=True)
        self.directory, self.shards = directory, shards
        self.progress = Progress(files, "preprocess", unit, stream=stream, every=every)
        self.stopped = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.show()

    def show(self, force: bool = False) -> None:
        c = read_counters(self.directory)
        mb = c["text_bytes"] / 1e6
        rate = mb / max(1e-9, time.monotonic() - self.start_time)
        self.progress.update(c["files"], force, text=f"{mb:.1f} MB ({rate:.1f} MB/s)",
                             documents=f"{c['documents']:,}", pairs=f"{c['pairs']:,}",
                             shards=f"{c['shards']}" + (f"/{self.shards}" if self.shards else ""))

    def stop(self) -> None:
        """Stop polling and show the final counts once."""
        self.stopped.set()
        self.join(timeout=5)
        self.show(force=True)
        self.progress.close()
