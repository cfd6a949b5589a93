"""What the commands print: the project's own lines, with third-party chatter filtered at its source.

:func:`setup` is called first thing by every command line (before Beam, torch or
DeepSpeed are imported, since some of them log while importing). Unless ``verbose``:

* named third-party loggers are raised to WARNING (or ERROR for the one that only
  relays Beam workers' routine notices), never the root logger: a real warning of ours,
  or an error of theirs, still shows;
* one warning Beam logs on the root logger at import ("apitools not found": Google
  Cloud clients we do not use) is dropped by a filter matching its source file;
* specific deprecation warnings raised inside DeepSpeed's and torch's own calls are
  ignored by message and category;
* specific warnings DeepSpeed logs about choices the project made on purpose
  (:data:`DROPPED_RECORDS`) are dropped by a filter on its logger;

Beam's worker processes get the same level through :data:`BEAM_WORKER_OPTIONS`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

QUIET_LOGGERS = {
    "apache_beam": logging.WARNING,
    "apache_beam.runners.portability.local_job_service": logging.ERROR,  # relays workers' notices
    "DeepSpeed": logging.WARNING,
    "torch.distributed": logging.WARNING,
    "wandb": logging.WARNING,
    "matplotlib": logging.WARNING,
    "distributed": logging.WARNING,  # Dask clusters: the scheduler's and workers' routine notices
}
IGNORED_WARNINGS = [  # (message regex, category)
    (r".*all_gather_into_tensor.* is deprecated", FutureWarning),  # called inside DeepSpeed's ZeRO
    (r".*reduce_scatter_tensor.* is deprecated", FutureWarning),
    (r".*pkg_resources is deprecated", UserWarning),  # imported by Beam's workers' dependencies
    (r".*`torch.cuda.amp.* is deprecated", FutureWarning),
]
DROPPED_RECORDS = {  # logger: message regexes of warnings about what the project chose on purpose
    "DeepSpeed": [
        r".*ZeRO with an untested optimizer",  # our LAMB, ZeRO-aware (pretrain.optim)
        r"MPU is not provided",  # loading a universal checkpoint without tensor parallelism
    ],
}
# Passed to Beam's local worker processes (their own logging is set from pipeline options).
BEAM_WORKER_OPTIONS = ["--default_sdk_harness_log_level=WARNING"]


class _BeamImportNotice(logging.Filter):
    """Drops the root-logger warning Beam's GCP I/O module logs when imported without its clients."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and f"apache_beam{os.sep}io{os.sep}gcp" in record.pathname)


class _Dropped(logging.Filter):
    def __init__(self, patterns: list[str]):
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


def drop_beam_import_notice() -> None:
    """Filter :class:`_BeamImportNotice` out of the root logger (once); also run in Dask workers."""
    root = logging.getLogger()
    if not is_quiet():
        root.addFilter(_BeamImportNotice())


def is_quiet() -> bool:
    """Whether :func:`setup` filtered third-party chatter in this process (not ``verbose``)."""
    return any(isinstance(f, _BeamImportNotice) for f in logging.getLogger().filters)


def dask_setup(service: object) -> None:
    """Dask's preload hook (``dask scheduler --preload preprocess.logs``): Beam's import notice filtered there."""
    drop_beam_import_notice()


def setup(verbose: bool = False) -> None:
    """Configure logging for a command: ours at INFO; third parties quiet unless ``verbose``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    drop_beam_import_notice()
    for name, patterns in DROPPED_RECORDS.items():
        logging.getLogger(name).addFilter(_Dropped(patterns))
    for message, category in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:pkg_resources")  # Beam's worker processes
    # Dask sets its loggers' levels from its config when imported, here and in its worker processes.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # gRPC's C core writes routine connection events (a worker's control channel closing: "Got
    # goaway") at INFO straight to stderr, in this process and in the local workers it starts.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
