"""Leaving a finished process without the interpreter's teardown.

After a job, the runner process and each local worker spend ~0.35 s in the interpreter's
teardown: gRPC's channels and servers closed one by one, then every module's objects freed, all of
which the operating system does at once. :func:`exit_now` does what the teardown does that matters
(the ``atexit`` handlers, which include ``tempfile``'s and ``weakref.finalize``'s clean-ups and
Dask's client close; logging's handlers flushed; standard output and error flushed) and ends the
process there. Only for a process that has finished its work; an error still leaves the usual way,
traceback and all.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Run the exit handlers, flush every log handler and both standard streams, and end with ``code``."""
    atexit._run_exitfuncs()  # what the interpreter runs first at exit; they unregister as they run
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to flush into
            pass
    os._exit(code)
