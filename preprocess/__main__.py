"""``python -m preprocess [options]`` runs the job; ``python -m preprocess inspect DIR`` reports on a dataset."""

from __future__ import annotations

import sys
from typing import NoReturn


def main(argv: list[str] | None = None) -> int:
    command = argv is None  # run as the program, not called by other code
    argv = sys.argv[1:] if argv is None else argv
    from preprocess import logs

    logs.setup(verbose="--verbose" in argv)  # before Beam is imported: it logs while importing
    if argv and argv[0] == "inspect":
        from preprocess.report import main as inspect_main

        return inspect_main(argv[1:])
    from preprocess.worker import warm_count, warm_pool

    with warm_pool(warm_count(argv)):  # the local workers import while this process does
        from preprocess.job import main as job_main
        from preprocess.job import not_in_ipython

        if command:
            not_in_ipython()
        return job_main(argv)


def program() -> NoReturn:
    """The command (``python -m preprocess``, ``bert-preprocess``): :func:`main`, then out without the
    interpreter's teardown, which would add ~0.35 s and change nothing (:mod:`preprocess.exiting`)."""
    from preprocess.exiting import exit_now

    exit_now(main())


if __name__ == "__main__":
    program()
