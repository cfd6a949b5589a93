"""Counts of what the stages keep and skip: Beam metrics for live monitoring, and the same
counts as tagged records that are summed into the manifest (exact on every runner)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from apache_beam import CombineFn
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from preprocess.manifest import add_stats

STATS = "stats"  # the tag of the stats output of every stage
NAMESPACE = "preprocess"


def count(stats: Counter | dict, group: str) -> TaggedOutput:
    """Beam metrics for the counts, and the same counts as a ``(group, counts)`` stats record."""
    increment(stats)
    return TaggedOutput(STATS, (group, dict(stats)))


def increment(counts: Counter | dict) -> None:
    for k, v in counts.items():
        if v:
            Metrics.counter(NAMESPACE, k).inc(v)


class SumStats(CombineFn):
    """Sums stats records (integers add, histograms add element-wise)."""

    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, acc: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
        return add_stats(acc, stats)

    def merge_accumulators(self, accs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in accs:
            out = add_stats(out, a)
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return acc
