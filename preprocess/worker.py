"""A local Beam worker process, started with the project's logging in place.

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
"""

from __future__ import annotations

import logging
import sys

from preprocess.exiting import exit_now


def main() -> None:
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)  # returns once the runner is done with this worker, its DoFns torn down
    exit_now(0)


if __name__ == "__main__":
    main()
