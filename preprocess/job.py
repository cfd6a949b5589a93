"""Running the preprocessing job: runner choice, inputs, output directory, summary.

With no ``--runner``, the job runs on Beam's FnApiRunner in multi-processing mode
with one worker per local core: no Prism download is attempted (Beam's default
runner tries one first, which fails offline). Any runner option given is passed
through unchanged, so the same command runs on Dataflow, Flink or Spark.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from preprocess.config import ConfigError, PreprocessConfig
from preprocess.documents import MAX_FILES
from preprocess.manifest import MANIFEST_NAME
from preprocess.pipeline import build_pipeline
from preprocess.progress import PROGRESS_DIR_VARIABLE, JobMonitor
from preprocess.shards import remove_parts
from preprocess.tokenization import (
    TokenizerSpec,
    VocabError,
    build_tokenizer,
    save_vocab_copy,
    vocab_info,
)

log = logging.getLogger("preprocess")


def pipeline_options(beam_args: list[str]) -> tuple[PipelineOptions, object | None]:
    """Beam options, and an explicit local runner when none was asked for."""
    opts = PipelineOptions(beam_args)
    if opts.view_as(StandardOptions).runner is not None:
        return opts, None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    direct = opts.view_as(DirectOptions)

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in beam_args)

    # DirectOptions defaults to one worker: ask for every core unless told otherwise.
    if not given("--direct_num_workers") or not direct.direct_num_workers:
        direct.direct_num_workers = os.cpu_count() or 1
    if not given("--direct_running_mode"):
        direct.direct_running_mode = "multi_processing" if direct.direct_num_workers > 1 else "in_memory"
    return opts, FnApiRunner(provision_info=_worker_provision(opts))


def _worker_provision(opts: PipelineOptions) -> object | None:
    """What the local runner tells its worker processes: the harness's log level, which the runner
    itself does not pass on (its workers otherwise log every routine step at INFO)."""
    level = opts.get_all_options().get("default_sdk_harness_log_level")
    if not level:
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo
    from google.protobuf import struct_pb2

    options = struct_pb2.Struct()
    options.update({"default_sdk_harness_log_level": level})
    return ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(retrieval_token="unused-retrieval-token",
                                                                      pipeline_options=options))


def local_tokenizer_threads(opts: PipelineOptions) -> int | None:
    """Cores per local worker process, so that W workers do not each start all-core pools."""
    direct = opts.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return None
    return max(1, (os.cpu_count() or 1) // max(1, direct.direct_num_workers))


def expand_inputs(patterns: tuple[str, ...]) -> list[str]:
    """Sorted, de-duplicated files matching the patterns; an unmatched pattern is an error."""
    files: set[str] = set()
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as e:  # noqa: BLE001 - Beam raises BeamIOError for a missing literal path
            raise ConfigError(f"--input {pattern}: {e}") from e
        paths = [m.path for m in matched if not m.path.endswith("/")]
        folders = [p for p in paths if _is_local(p) and os.path.isdir(p)]
        if folders:
            raise ConfigError(f"--input {pattern}: {folders[0]} is a directory; give files or a glob, "
                              f"e.g. --input '{folders[0].rstrip('/')}/**/*.txt'")
        if not paths:
            raise ConfigError(f"--input {pattern}: no files match")
        files.update(paths)
    if len(files) > MAX_FILES:
        raise ConfigError(f"--input: {len(files)} files; at most {MAX_FILES} are supported (merge small files)")
    return sorted(files)


def _is_local(path: str) -> bool:
    """A path of this machine's filesystem, not gs://, s3://, hdfs:// ..."""
    return "://" not in path


def prepare_output(output: str) -> None:
    """Create the directory; remove a previous run's manifest and shards first.

    The old manifest goes before anything else, so a reader never pairs it with
    new shards; a directory without a manifest is not a dataset.
    """
    if _is_local(output) and os.path.exists(output) and not os.path.isdir(output):
        raise ConfigError(f"--output {output}: is a file; give a directory (it is created if missing)")
    if not FileSystems.exists(output):
        FileSystems.mkdirs(output)
    manifest = FileSystems.join(output, MANIFEST_NAME)
    if FileSystems.exists(manifest):
        FileSystems.delete([manifest])
    remove_parts(output)
    for split in ("train", "validation"):
        pattern = FileSystems.join(output, split, "shard-*.arrow*")
        stale = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if stale:
            FileSystems.delete(stale)


def run(cfg: PreprocessConfig, beam_args: list[str]) -> dict:
    """Run the job to completion and return the manifest."""
    spec = TokenizerSpec(cfg.vocab, cfg.lower_case)
    vocab = vocab_info(build_tokenizer(spec), spec)  # fails here, before any work, on a bad vocab
    files = expand_inputs(cfg.inputs)
    opts, runner = pipeline_options(beam_args)
    prepare_output(cfg.output)
    save_vocab_copy(spec, cfg.output)
    log.info("preprocessing %d input files into %s", len(files), cfg.output)
    p = beam.Pipeline(runner=runner, options=opts) if runner else beam.Pipeline(options=opts)
    build_pipeline(p, cfg, files, vocab, local_tokenizer_threads(opts) if runner else None)
    if runner is None:  # a distributed runner shows progress in its own console
        p.run().wait_until_finish()
    else:
        with local_progress(len(files), cfg.num_shards + cfg.validation_shards):
            p.run().wait_until_finish()
    with FileSystems.open(FileSystems.join(cfg.output, MANIFEST_NAME)) as f:
        return json.loads(f.read())


@contextlib.contextmanager
def local_progress(files: int, shards: int) -> Iterator[None]:
    """Progress of a local run, from its worker processes' counters (see :mod:`preprocess.progress`)."""
    directory = tempfile.mkdtemp(prefix="preprocess-progress-")
    os.environ[PROGRESS_DIR_VARIABLE] = directory  # inherited by the local worker processes
    monitor = JobMonitor(directory, files, shards)
    monitor.start()
    try:
        yield
    finally:
        monitor.stop()
        os.environ.pop(PROGRESS_DIR_VARIABLE, None)
        shutil.rmtree(directory, ignore_errors=True)


def summary(manifest: dict) -> str:
    lines = []
    for name, split in manifest["splits"].items():
        st = split["stats"]
        lines.append(
            f"{name}: {split['rows']:,} sequences, {split['tokens']:,} tokens in {len(split['shards'])} shards; "
            f"NotNext {st['next_sentence_random_fraction']:.3f}, masked {st['masked_fraction']:.3f}, "
            f"[UNK] {st['unk_rate']:.4f}, truncated tokens {st.get('tokens_truncated', 0):,}"
        )
    docs = manifest["documents"]
    skipped = {k: v for k, v in docs.items() if k.startswith(("file_", "line_", "json_", "document_")) and v}
    lines.append(
        f"documents: {docs.get('documents_read', 0):,} read, {docs.get('documents_used', 0):,} used"
        + (f"; counted: {json.dumps(skipped, sort_keys=True)}" if skipped else "")
    )
    return "\n".join(lines)


def quiet_workers(beam_args: list[str]) -> list[str]:
    """Beam options that keep local worker processes to warnings, unless the command line sets them."""
    from preprocess.logs import BEAM_WORKER_OPTIONS

    given = {a.split("=", 1)[0] for a in beam_args}
    return [o for o in BEAM_WORKER_OPTIONS if o.split("=", 1)[0] not in given]


def not_in_ipython() -> None:
    """Tell Beam, cheaply, that this command is not an IPython session.

    Beam checks for IPython at every transform it adds by importing it, which costs
    0.35 s where IPython is installed (a tenth of the job's start-up). A command-line
    process that has not imported IPython is not running in it, so the import is made
    to fail at once, which Beam reads as "not interactive".
    """
    if "IPython" not in sys.modules:
        sys.modules["IPython"] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    from preprocess import logs
    from preprocess.config import parse_args

    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    logs.setup(verbose)
    try:
        cfg, beam_args = parse_args(argv)
        manifest = run(cfg, beam_args if verbose else beam_args + quiet_workers(beam_args))
    except (ConfigError, VocabError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(manifest))
    if manifest["splits"]["train"]["rows"] == 0:
        print("error: no training sequences were produced; see the counts above", file=sys.stderr)
        return 1
    return 0
