"""How the job's work is cut by size: the shuffle's buckets, and the output's shards.

What one worker holds at once must not grow with the corpus, so both cuts follow
configured sizes, never a fixed count:

* **Buckets** (:func:`bucket_count`): masking takes one bucket at a time, whole (its pairs,
  its random-next requests and the donors they draw from). A bucket holds about
  :data:`BUCKET_TEXT_BYTES` of text times the dupe factor, so the count grows with the input.
  It is fixed when the job is planned, from the inputs' sizes (a compressed file counted at
  :data:`COMPRESSED_TEXT_RATIO` times its size: an estimate, which sizes buckets and
  nothing else), so every runner and worker count makes the same buckets.
* **Groups of buckets** (:func:`group_count`): what the bucket shuffle moves is one reference
  per batch of documents and *group*, a contiguous range of buckets, and one masking task
  takes a group: it first spreads the group's blocks into one file per bucket, then masks
  its buckets one at a time. References grow as batches x groups, not batches x buckets
  (which at terabytes is about one per row), and a task opens each of its batches' spill
  files once. A group is a bucket up to :data:`GROUPS_MIN` buckets (no spreading); beyond,
  it takes up to :data:`BUCKETS_PER_GROUP_MAX` buckets. Groups decide how the work is cut,
  never the bytes: a bucket is masked alike in any group.
* **Shards** (:func:`shard_count`): ``--shard-size`` bytes of output each, from the split's
  row and token counts once pairing has counted them (:func:`estimated_bytes`, the
  format's own arithmetic): the same input and options always give the same count.
  ``--num-shards`` fixes the count instead.

Buckets and shards are independent: a shard gathers the rows of the buckets that fall in
its range of positions, a bucket's rows go to one shard or two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BUCKET_TEXT_BYTES = 32 << 20  # input text times passes (dupe factor) per bucket: ~7 M tokens
COMPRESSED_TEXT_RATIO = 3  # text a byte of a compressed input (gz, bz2, zst, Parquet) holds, roughly
COMPRESSED = (".gz", ".bz2", ".zst", ".deflate", ".parquet", ".pq")
GROUPS_MIN = 256  # masking tasks that can run at once, however large the buckets are
BUCKETS_PER_GROUP_MAX = 256  # files a masking task spreads its group into (open at once)
ROW_BYTES = 4 + 2 + 4 + 4 + 1 + 8 + 8 + 8  # the offsets of three lists, b_start, label, two doc ids, checksum


def text_bytes(sizes: dict[str, int]) -> int:
    """The text the inputs hold, estimated from their sizes."""
    return sum(size * (COMPRESSED_TEXT_RATIO if path.lower().endswith(COMPRESSED) else 1)
               for path, size in sizes.items())


def bucket_count(text: int, share: float, dupe_factor: int) -> int:
    """Buckets of a split holding ``share`` of ``text`` input bytes, each made into pairs
    ``dupe_factor`` times: one per :data:`BUCKET_TEXT_BYTES`."""
    return max(1, math.ceil(text * share * dupe_factor / BUCKET_TEXT_BYTES))


def group_count(buckets: int) -> int:
    """The groups of ``buckets`` buckets the shuffle moves (see the module's note)."""
    return min(buckets, max(GROUPS_MIN, math.ceil(buckets / BUCKETS_PER_GROUP_MAX)))


def group_of(bucket: int, buckets: int, groups: int) -> int:
    """The group of a bucket: groups are contiguous, as even as can be, ranges of buckets."""
    return bucket * groups // buckets


def group_buckets(group: int, buckets: int, groups: int) -> range:
    """The buckets of a group (those that :func:`group_of` sends to it)."""
    return range(-(-group * buckets // groups), -(-(group + 1) * buckets // groups))


@dataclass(frozen=True)
class ShardSizing:
    """What the shard count of a split follows from: a fixed count, or a size in bytes."""

    count: int | None  # --num-shards (the split's share of it), or None
    size: int  # --shard-size, bytes of output per shard
    token_bytes: int  # 2 (uint16) or 4 (int32)
    masked_lm_prob: float
    max_predictions_per_seq: int


def estimated_bytes(rows: int, tokens: int, sizing: ShardSizing) -> int:
    """The output of ``rows`` rows of ``tokens`` tokens in all: token ids, the masked positions
    (2 bytes) and labels, and each row's fixed columns (:mod:`preprocess.shards`)."""
    predictions = min(rows * sizing.max_predictions_per_seq, round(tokens * sizing.masked_lm_prob))
    return tokens * sizing.token_bytes + predictions * (2 + sizing.token_bytes) + rows * ROW_BYTES


def shard_count(rows: int, tokens: int, sizing: ShardSizing) -> int:
    """The shards of a split of ``rows`` rows (at least one row each; none for no rows)."""
    if rows == 0:
        return 0
    wanted = sizing.count or max(1, round(estimated_bytes(rows, tokens, sizing) / sizing.size))
    return min(wanted, rows)


def shuffle_partitions(threads: int, keys: int) -> tuple[int, int]:
    """On a Dask cluster of ``threads`` worker threads: the partitions of the job's shuffles, and of
    the two before its heavy stages (masking, writing), whose keys are at most ``keys`` (the largest
    split's groups of buckets, or ``--num-shards``); see :func:`preprocess.runners.coalesced_shuffles`.
    Twice the threads; for the heavy ones 4 times the threads (at most 1,024) but no more partitions
    than keys: Dask's task-based shuffle of *n* partitions is ~*n*² tasks (with 8 times the threads on
    2 workers, 576 of a 200 MB job's 1,137 tasks were its splits, and the job ran ~4% slower)."""
    return 2 * threads, max(2 * threads, min(4 * threads, 1024, keys))
