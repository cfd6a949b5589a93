"""Running the preprocessing job: inputs, output directory, the run on its runner, summary.

The runner is :mod:`preprocess.runners`' choice: Beam's local runner on every core by
default, Beam's Dask runner with ``--runner dask``, any other runner as Beam builds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from preprocess.cluster import dask_cluster
from preprocess.config import ConfigError, PreprocessConfig
from preprocess.documents import MAX_FILES
from preprocess.input_parts import InputPart, largest_first, plan_parts
from preprocess.inputs import file_format
from preprocess.manifest import MANIFEST_NAME
from preprocess.pipeline import build_pipeline
from preprocess.progress import PROGRESS_DIR_VARIABLE, JobMonitor
from preprocess.runners import (
    is_dask,
    local_tokenizer_threads,
    pipeline_options,
    restore_malloc_thresholds,
    run_on_dask,
)
from preprocess.shards import PARTS_DIR, remove_parts
from preprocess.sizing import bucket_count, group_count, shuffle_partitions, text_bytes
from preprocess.tokenization import (
    TokenizerSpec,
    VocabError,
    VocabInfo,
    build_tokenizer,
    save_vocab_copy,
    vocab_info,
)

log = logging.getLogger("preprocess")
SKIP_PREFIXES = ("file_", "line_", "json_", "document_", "parquet_", "wiki_")  # the reader's counts by reason


def expand_inputs(patterns: tuple[str, ...]) -> list[str]:
    """Sorted, de-duplicated files matching the patterns; an unmatched pattern is an error.

    A directory is a Parquet dataset: the Parquet files under it, at any depth, less those
    whose name or folder starts with ``.`` or ``_`` (as Arrow's and Spark's datasets have
    it: ``_SUCCESS``, ``.git``); a README beside them is not read. A directory without
    Parquet files is refused: give a glob.
    """
    return list(match_inputs(patterns))


def match_inputs(patterns: tuple[str, ...]) -> dict[str, int]:
    """:func:`expand_inputs`' files with their sizes in bytes, in the files' order."""
    files: dict[str, int] = {}
    for pattern in patterns:
        if pattern.endswith("/") or (_is_local(pattern) and os.path.isdir(pattern)):
            files.update(_parquet_dataset(pattern))
            continue
        found = {path: size for path, size in _match(pattern, pattern).items() if not path.endswith("/")}
        folders = [p for p in found if _is_local(p) and os.path.isdir(p)]
        if folders:
            raise ConfigError(f"--input {pattern}: {folders[0]} is a directory; give files or a glob, "
                              f"e.g. --input '{folders[0].rstrip('/')}/**/*.txt'")
        if not found:
            raise ConfigError(f"--input {pattern}: no files match")
        files.update(found)
    if len(files) > MAX_FILES:
        raise ConfigError(f"--input: {len(files)} files; at most {MAX_FILES} are supported (merge small files)")
    return dict(sorted(files.items()))


def _match(pattern: str, given: str) -> dict[str, int]:
    """Size by path of what ``pattern`` matches; Beam's error as the ``--input given`` option's."""
    try:
        return {m.path: m.size_in_bytes for m in FileSystems.match([pattern])[0].metadata_list}
    except Exception as e:  # noqa: BLE001 - Beam raises BeamIOError for a missing literal path
        raise ConfigError(f"--input {given}: {e}") from e


def _parquet_dataset(directory: str) -> dict[str, int]:
    root = directory.rstrip("/")
    found = {path: size for path, size in _match(root + "/**", directory).items()
             if path.lower().endswith((".parquet", ".pq"))
             and not any(part.startswith((".", "_")) for part in path[len(root):].split("/") if part)}
    if not found:
        raise ConfigError(f"--input {directory}: is a directory without Parquet files; give files or a glob, "
                          f"e.g. --input '{root}/**/*.txt'")
    return found


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
        try:
            FileSystems.mkdirs(output)
        except OSError as e:  # Beam wraps the OS's error in another
            cause = e.args[0] if e.args and isinstance(e.args[0], OSError) else e
            where = f" at {cause.filename}" if getattr(cause, "filename", None) else ""
            raise ConfigError(f"--output {output}: cannot create it ({cause.strerror or cause}{where}); "
                              "give a directory whose parent exists and is writable") from None
    manifest = FileSystems.join(output, MANIFEST_NAME)
    if FileSystems.exists(manifest):
        FileSystems.delete([manifest])
    remove_parts(output)
    for split in ("train", "validation"):
        pattern = FileSystems.join(output, split, "shard-*.arrow*")
        stale = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        if stale:
            FileSystems.delete(stale)


def job_pipeline(cfg: PreprocessConfig, parts: list[str] | list[InputPart], vocab: VocabInfo, opts: PipelineOptions,
                 runner: object | None = None, tokenizer_threads: int | None = None, text: int = 0) -> beam.Pipeline:
    """The job's pipeline, built and not yet run (``runner``: an explicit local runner, else Beam's choice;
    ``text``: the inputs' bytes of text, :func:`~preprocess.sizing.text_bytes`)."""
    p = beam.Pipeline(runner=runner, options=opts) if runner else beam.Pipeline(options=opts)
    build_pipeline(p, cfg, parts, vocab, tokenizer_threads, text)
    return p


def run(cfg: PreprocessConfig, beam_args: list[str]) -> dict:
    """Run the job to completion and return the manifest."""
    restore_malloc_thresholds()  # for an in-process run; each worker process sets its own
    spec = TokenizerSpec(cfg.vocab, cfg.lower_case)
    vocab = vocab_info(build_tokenizer(spec), spec)  # fails here, before any work, on a bad vocab
    sizes = match_inputs(cfg.inputs)
    files, text = list(sizes), text_bytes(sizes)
    parts = largest_first(plan_parts(sizes, {f: file_format(f, cfg.read_params) for f in files},
                                     cfg.input_part_bytes), sizes)
    opts, runner = pipeline_options(beam_args)
    prepare_output(cfg.output)
    save_vocab_copy(spec, cfg.output)
    log.info("preprocessing %d input files%s into %s", len(files),
             f" (read in {len(parts)} parts)" if len(parts) > len(files) else "", cfg.output)
    try:
        _run_pipeline(cfg, parts, len(files), vocab, opts, runner, text)
    except BaseException:  # failed, interrupted or stopped: no manifest was written; the scratch goes too
        remove_parts(cfg.output)
        raise
    with FileSystems.open(FileSystems.join(cfg.output, MANIFEST_NAME)) as f:
        return json.loads(f.read())


def _run_pipeline(cfg: PreprocessConfig, parts: list[InputPart], files: int, vocab: VocabInfo,
                  opts: PipelineOptions, runner: object | None, text: int) -> None:
    if is_dask(opts):  # a distributed runner shows progress in its own console (Dask: its dashboard)
        groups = group_count(bucket_count(text, max(cfg.split_shares.values()), cfg.dupe_factor))  # the largest split's
        with dask_cluster(opts, len(parts)) as threads:
            shuffles, heavy = shuffle_partitions(threads, max(groups, cfg.num_shards or 0))
            run_on_dask(job_pipeline(cfg, parts, vocab, opts, text=text), shuffles, heavy)
    elif runner is None:
        job_pipeline(cfg, parts, vocab, opts, text=text).run().wait_until_finish()
    else:
        p = job_pipeline(cfg, parts, vocab, opts, runner, local_tokenizer_threads(opts), text)
        shards = None if cfg.num_shards is None else sum(cfg.shard_sizing(s, 2).count for s in cfg.split_shares)
        with local_progress(len(parts), shards, len(parts) > files):
            p.run().wait_until_finish()


@contextlib.contextmanager
def local_progress(files: int, shards: int | None, parts: bool = False) -> Iterator[None]:
    """Progress of a local run, from its worker processes' counters (see :mod:`preprocess.progress`)."""
    directory = tempfile.mkdtemp(prefix="preprocess-progress-")
    os.environ[PROGRESS_DIR_VARIABLE] = directory  # inherited by the local worker processes
    monitor = JobMonitor(directory, files, shards, unit="file parts" if parts else "files")
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
    scratch = manifest.get("scratch")
    if scratch:
        lines.append(f"scratch: {scratch['peak_bytes'] / 1e6:,.1f} MB under {PARTS_DIR}/ at its largest, "
                     f"{scratch['ratio']:.2f}x the output's {scratch['output_bytes'] / 1e6:,.1f} MB (removed)")
    docs = manifest["documents"]
    skipped = {k: v for k, v in docs.items() if k.startswith(SKIP_PREFIXES) and v}
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


def stop_on_sigterm() -> None:
    """SIGTERM (Slurm's time limit, ``scancel``, a pod's eviction) ends the job as Ctrl-C does: through
    its clean-up (the scratch directory removed, a local cluster closed), with status 143."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    from preprocess import logs
    from preprocess.config import parse_args

    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    logs.setup(verbose)
    stop_on_sigterm()
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
