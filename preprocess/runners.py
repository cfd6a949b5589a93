"""The runners the job runs on: Beam's local runner by default, Beam's Dask runner, or any other.

* No ``--runner``: Beam's FnApiRunner in multi-processing mode with one worker per local
  core (Beam's default runner would first try to download Prism, which fails offline).
* ``--runner dask`` (or ``DaskRunner``, or its full name): Beam's Dask runner on the
  ``dask.distributed`` cluster named by ``--dask_scheduler_file`` or
  ``--dask_client_address``; without either, a local cluster of one worker process per core,
  started and stopped by :func:`preprocess.cluster.dask_cluster`. :func:`run_on_dask` checks the
  pipeline's shape first (:func:`check_dask_shape`), sizes the input partitions to the cluster,
  and closes its client.
* Any other runner option is passed through unchanged (Dataflow, Flink, Spark, portable).

Beam's Dask runner (Beam 2.71 to 2.78, as tested) translates a pipeline into Dask bags and runs some shapes
wrongly without a word. :func:`check_dask_shape` refuses those before any work:

1. a ``ParDo`` with several outputs: every output is the same bag, so each consumer
   receives the elements of every tag;
2. side inputs: each task that reads one computes the side input's whole upstream graph
   again, inside the task (its side effects too);
3. a ``DoFn`` with its own ``finish_bundle``: what it emits there is dropped (the bundle's
   results are collected before ``finish_bundle`` runs), e.g. ``BatchElements``' last batch;
4. ``Read`` (e.g. ``ReadFromText``), ``Reshuffle`` and ``WindowInto``: not translated
   (windowing and reshuffles are ignored, reads produce nothing);
5. more than one sink: only the bag of the last transform visited is computed, so a
   second branch that nothing downstream depends on never runs.

Metrics are not implemented by that runner (counts reach the manifest through the data),
and ``Create`` puts up to 128 elements in one partition unless ``--dask_npartitions`` is
set, which :func:`run_on_dask` does: one partition per input part. Every ``ParDo`` keeps
its input's partitions and holds a partition's whole output at once, so a partition's size,
not the corpus, is what a worker holds: parts are cut by size (``--input-part-bytes``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import sys
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from preprocess import logs
from preprocess.config import ConfigError

log = logging.getLogger("preprocess")
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DASK_NAMES = ("dask", "daskrunner", DASK_RUNNER.lower())


def pipeline_options(beam_args: list[str]) -> tuple[PipelineOptions, object | None]:
    """Beam options, and an explicit local runner when none was asked for."""
    opts = PipelineOptions(beam_args)
    standard = opts.view_as(StandardOptions)
    if standard.runner is not None:
        if is_dask(opts):
            standard.runner = DASK_RUNNER
        return opts, None
    direct = opts.view_as(DirectOptions)

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in beam_args)

    # DirectOptions defaults to one worker: ask for every core unless told otherwise.
    if not given("--direct_num_workers") or not direct.direct_num_workers:
        direct.direct_num_workers = os.cpu_count() or 1
    if not given("--direct_running_mode"):
        direct.direct_running_mode = "multi_processing" if direct.direct_num_workers > 1 else "in_memory"
    provision = _worker_provision(opts)
    if direct.direct_running_mode == "multi_processing" and logs.is_quiet():
        return opts, LocalRunner(provision_info=provision)
    return opts, FnApiRunner(provision_info=provision)


class LocalRunner(FnApiRunner):
    """Beam's local runner in multi-processing mode, its workers started through :mod:`preprocess.worker`.

    ``FnApiRunner.run_pipeline`` replaces the runner's worker environment with Beam's stock
    command whenever ``direct_running_mode`` is ``multi_processing``; the mode is set aside
    for that one call (the run is synchronous) so that the environment given here is used,
    with the same worker count and everything else unchanged.
    """

    WORKER_COMMAND = f"{shlex.quote(sys.executable)} -m preprocess.worker"

    def __init__(self, provision_info: object | None = None):
        from apache_beam.transforms.environments import SubprocessSDKEnvironment

        super().__init__(default_environment=SubprocessSDKEnvironment.from_command_string(self.WORKER_COMMAND),
                         provision_info=provision_info)

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> object:
        direct = options.view_as(DirectOptions)
        mode, direct.direct_running_mode = direct.direct_running_mode, None
        try:
            return super().run_pipeline(pipeline, options)
        finally:
            direct.direct_running_mode = mode


def is_dask(opts: PipelineOptions) -> bool:
    runner = opts.view_as(StandardOptions).runner
    return isinstance(runner, str) and runner.lower() in DASK_NAMES


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


class _ShapeCheck(beam.pipeline.PipelineVisitor):
    TRANSLATED = (beam.Create, beam.GroupByKey)  # replaced whole by the runner's own translation
    UNTRANSLATED = (beam.io.Read, beam.Reshuffle, beam.WindowInto, beam.Impulse)  # run as no-ops

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.consumed: set[int] = set()
        self.leaves: list[beam.pipeline.AppliedPTransform] = []
        self.inside_translated: list[beam.pipeline.AppliedPTransform] = []

    def visit_transform(self, node: beam.pipeline.AppliedPTransform) -> None:
        if self.inside_translated:
            return
        self.leaves.append(node)
        for pcoll in list(node.main_inputs.values()) + [si.pvalue for si in node.side_inputs]:
            self.consumed.add(id(pcoll))
        self._check(node)

    def enter_composite_transform(self, node: beam.pipeline.AppliedPTransform) -> None:
        if self.inside_translated:
            return
        if type(node.transform) in self.TRANSLATED or isinstance(node.transform, self.UNTRANSLATED):
            self.visit_transform(node)  # one leaf to the runner; what it expands to here is not run
            self.inside_translated.append(node)

    def leave_composite_transform(self, node: beam.pipeline.AppliedPTransform) -> None:
        if self.inside_translated and self.inside_translated[-1] is node:
            self.inside_translated.pop()

    def _check(self, node: beam.pipeline.AppliedPTransform) -> None:
        transform, label = node.transform, node.full_label
        if isinstance(transform, self.UNTRANSLATED):
            hint = "read inputs with Create and a DoFn" if isinstance(transform, (beam.io.Read, beam.Impulse)) else ""
            self.problems.append(f"{label}: {type(transform).__name__} is not translated (the runner skips it"
                                 + (f"; {hint})" if hint else ")"))
            return
        if not isinstance(transform, beam.ParDo):
            return
        if len(node.outputs) > 1:
            self.problems.append(f"{label}: a ParDo with several outputs ({', '.join(map(str, node.outputs))}); "
                                 "the runner gives every consumer the elements of every output")
        if node.side_inputs:
            self.problems.append(f"{label}: side inputs; the runner recomputes them inside every task")
        fn = transform.fn
        if type(fn).finish_bundle is not beam.DoFn.finish_bundle:
            self.problems.append(f"{label}: {type(fn).__name__}.finish_bundle; the runner drops what it emits")

    def sinks(self) -> list[beam.pipeline.AppliedPTransform]:
        return [n for n in self.leaves
                if n.outputs and all(id(p) not in self.consumed for p in n.outputs.values())]


def check_dask_shape(pipeline: beam.Pipeline) -> None:
    """Raise :class:`ConfigError` naming every transform Beam's Dask runner would run wrongly.

    ``Create`` and ``GroupByKey`` are checked as the runner runs them, by its own
    translation, not by their expansion here (a ``Create`` expands with a ``Reshuffle``).
    """
    check = _ShapeCheck()
    pipeline.visit(check)
    problems = check.problems
    sinks = check.sinks()
    if len(sinks) > 1:
        problems.append("several sinks (" + ", ".join(n.full_label for n in sinks) + "); the runner computes only "
                        "the last transform, so the others would never run: make one final transform depend on all")
    elif sinks and check.leaves and sinks[0] is not check.leaves[-1]:
        problems.append(f"{sinks[0].full_label}: the sink is not the last transform applied; the runner computes "
                        f"only {check.leaves[-1].full_label}")
    if problems:
        raise ConfigError("--runner dask: Beam's Dask runner would run this pipeline wrongly:\n  "
                          + "\n  ".join(problems))


# glibc's own steady state for a process that allocates large arrays: allocations up to 32 MiB
# from the heap, which is trimmed past 64 MiB free (glibc raises its thresholds to these by itself,
# unless either is set by hand).
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


def restore_malloc_thresholds() -> bool:
    """Undo, in this process, the ``MALLOC_TRIM_THRESHOLD_=65536`` that Dask's nanny gives its workers.

    Setting that variable also fixes glibc's mmap threshold at 128 KiB, so every array larger
    than that is a fresh ``mmap`` whose pages fault in on first touch and go back on ``free``:
    the job's array stages (masking, row building, pairing) ran 2-3x slower in a Dask worker than
    the same call in a plain process (measured: masking a 100,000-row bucket 1.15 s against
    0.41 s). ``mallopt`` sets glibc's thresholds back; False where the C library is not glibc.

    A fresh process without that variable reaches these thresholds by itself, but only after
    its first large arrays were mapped, faulted in and unmapped; local workers and in-process
    runs set them at the start too (measured on the 33 MB benchmark in one process: 117,000 minor
    page faults against 210,000, 0.9 s of system time against 1.1-1.3 s).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


# The shuffles whose next stage does the job's heavy work (masking a group of buckets, writing a
# shard), by the label of their transform.
HEAVY_SHUFFLES = ("GatherGroups", "GroupByShard")


@contextlib.contextmanager
def coalesced_shuffles(partitions: int, heavy: int | None = None) -> Iterator[None]:
    """While a pipeline is translated: every ``GroupByKey`` first joins its input into at most
    ``partitions`` partitions (neighbours concatenated, no data moved); the shuffles in
    :data:`HEAVY_SHUFFLES` into ``heavy`` partitions (cut or joined), which their output keeps.

    Beam's Dask runner keeps a bag's partitions through every ``ParDo`` and adds them up at each
    ``Flatten``, and Dask's task-based shuffle of ``n`` partitions is ``n`` x ``k`` x stages tiny
    tasks (``k`` = ``n`` up to 32): the job's stats, counts and shard records, ~8 bags of one
    partition per input part, made ~7,000 of a 100 MB job's 8,500 tasks, and their scheduling
    kept the workers idle at the end. Everything the job shuffles is small (references and
    counts; tokens move through files), so fewer, larger partitions cost nothing; ``partitions``
    (twice the cluster's threads) keeps the stages after a shuffle parallel. After the heavy
    shuffles, smaller tasks keep the workers busy to the end of the stage: with one task per
    thread and a half, the last one of a worker ran while the other worker sat idle.
    """
    from apache_beam.runners.dask import transform_evaluator
    from apache_beam.runners.dask.overrides import _GroupByKeyOnly

    class CoalescedGroupByKey(transform_evaluator.GroupByKey):
        def apply(self, input_bag: object, side_inputs: object = None) -> object:
            # a task-based shuffle's output has as many partitions as its input
            if heavy and any(f"/{name}/" in f"/{self.applied.full_label}/" for name in HEAVY_SHUFFLES):
                if input_bag.npartitions != heavy:
                    input_bag = input_bag.repartition(npartitions=heavy)
            elif input_bag.npartitions > partitions:
                input_bag = input_bag.repartition(npartitions=partitions)
            return super().apply(input_bag, side_inputs)

    table = transform_evaluator.TRANSLATIONS
    original = table[_GroupByKeyOnly]
    table[_GroupByKeyOnly] = CoalescedGroupByKey
    try:
        yield
    finally:
        table[_GroupByKeyOnly] = original


def run_on_dask(pipeline: beam.Pipeline, shuffle_partitions: int | None = None,
                heavy_partitions: int | None = None) -> None:
    """Check the pipeline's shape, then run it to completion on the cluster its options name
    (``shuffle_partitions``, ``heavy_partitions``: see :func:`coalesced_shuffles`).

    The pipeline checked is the one that runs, not the copy Beam's ``Pipeline.run`` would first make
    through its portable form (``test_runner_api``), pickling every stage again (~0.2 s).
    """
    import dask

    check_dask_shape(pipeline)
    shuffles = coalesced_shuffles(shuffle_partitions, heavy_partitions) if shuffle_partitions else contextlib.nullcontext()
    # A disk-based shuffle would write to each node's local disk: across nodes, tasks.
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        with shuffles:
            result = pipeline.run(test_runner_api=False)
        try:
            result.wait_until_finish()
        finally:
            result.client.close()
