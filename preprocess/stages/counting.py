"""Counts of what the stages keep and skip, and the one way a stage has several outputs.

Counts go two ways: Beam metrics for live monitoring (where the runner has them), and the
same counts as ``stats`` records that are summed into the manifest (exact on every runner).

A stage with several outputs (documents and stats; train, validation and stats) yields
``(tag, value)`` records in its single output, and :class:`ByTag` splits them with one
single-output transform per tag. No stage uses a multi-output ``ParDo``: Beam's Dask
runner hands every output of one to every consumer (see :mod:`preprocess.runners`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam import CombineFn
from apache_beam.metrics import Metrics

from preprocess.manifest import add_stats

STATS = "stats"  # the tag of the stats output of every stage
SCRATCH = "scratch"  # the stats group of the bytes written under .parts/
NAMESPACE = "preprocess"


def count(stats: Counter | dict, group: str) -> tuple[str, tuple[str, dict]]:
    """Beam metrics for the counts, and the same counts as a ``(group, counts)`` stats record."""
    increment(stats)
    return STATS, (group, dict(stats))


def increment(counts: Counter | dict) -> None:
    for k, v in counts.items():
        if v:
            Metrics.counter(NAMESPACE, k).inc(v)


def _values_of(tag: str):
    def select(record: tuple[str, Any]) -> list:
        return [record[1]] if record[0] == tag else []

    return select


class ByTag(beam.PTransform):
    """``(tag, value)`` records -> ``{tag: PCollection of values}`` for the given tags."""

    def __init__(self, *tags: str):
        super().__init__()
        self.tags = tags

    # Returns {tag: PCollection}, not annotated: Beam reads an expand's annotations as the element
    # types of one PCollection (Beam 2.78 warns on any other), as in every multi-output transform here.
    def expand(self, records: beam.PCollection):
        return {tag: records | f"Only[{tag}]" >> beam.FlatMap(_values_of(tag)) for tag in self.tags}


class SumStats(CombineFn):
    """Sums stats records (integers add, histograms add element-wise)."""

    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, acc: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
        return add_stats(acc, stats)

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in accs:
            out = add_stats(out, a)
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return acc
