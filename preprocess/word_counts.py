"""Count a corpus's words as BERT's tokenizer sees them, on every core.

A word is what ``tokenizers``' ``BertNormalizer`` and ``BertPreTokenizer`` make of the text
(normalised, split at spaces and punctuation, CJK characters on their own), the very steps the
preprocessing job's tokenizer runs before WordPiece (:func:`preprocess.tokenization.bert_normalizer`).
The counts are exact sums, so they are the same for any number of processes and any order of the lines.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from tokenizers import pre_tokenizers

from preprocess.tokenization import bert_normalizer

# Lines normalised and pre-tokenized per call into the library: one call per line spends most of
# the time crossing into Rust, and much longer strings cost more per byte (measured: 64 lines a
# call is about twice as fast as 1 or 2,048). Words never cross a line, so batches change no count.
_LINES_PER_CALL = 64
# Lines a worker process counts per task, and tasks in flight per process: what the parent holds.
_LINES_PER_TASK = 8192
_TASKS_IN_FLIGHT = 2


def count_lines(lines: list[str], lower_case: bool) -> Counter:
    """The words of ``lines`` and their occurrences, in this process."""
    normalizer, pre_tokenizer = bert_normalizer(lower_case), pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for i in range(0, len(lines), _LINES_PER_CALL):
        text = normalizer.normalize_str("\n".join(lines[i:i + _LINES_PER_CALL]))
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(text))
    return counts


def _tasks(lines: Iterable[str]) -> Iterator[list[str]]:
    task: list[str] = []
    for line in lines:
        task.append(line)
        if len(task) == _LINES_PER_TASK:
            yield task
            task = []
    if task:
        yield task


def count_words(lines: Iterable[str], lower_case: bool = True, processes: int = 1) -> Counter:
    """Each word of the text and its occurrences, counted in ``processes`` processes.

    Streams: the parent reads the lines and holds at most a few tasks of them at once; what grows
    is the table of distinct words, never the text.
    """
    if processes <= 1:
        counts: Counter = Counter()
        for task in _tasks(lines):
            counts.update(count_lines(task, lower_case))
        return counts
    counts = Counter()
    pending: list[Future] = []
    # spawn: the parent may hold threads (the library's, Beam's), which fork would copy mid-state.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for task in _tasks(lines):
            pending.append(pool.submit(count_lines, task, lower_case))
            if len(pending) >= processes * _TASKS_IN_FLIGHT:
                counts.update(pending.pop(0).result())
        for f in pending:
            counts.update(f.result())
    return counts
