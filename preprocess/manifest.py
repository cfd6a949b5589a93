"""The dataset manifest: the list of complete shards and the run's statistics.

``manifest.json`` is written last, atomically, after every shard is renamed into
place; a directory without one is not a dataset. It holds no timestamps or host
names, so the same inputs and seed give the same bytes, and its own checksum
(``checksum``: sha256 of the manifest without that key, see :func:`seal`), so a
damaged manifest is caught.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from preprocess.shards import FORMAT_NAME, FORMAT_VERSION, ShardInfo

MANIFEST_NAME = "manifest.json"


def add_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum two statistics dicts: integers add, lists add element-wise."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = list(v) if isinstance(v, list) else v
        elif isinstance(v, list):
            cur = out[k]
            if len(cur) < len(v):
                cur = cur + [0] * (len(v) - len(cur))
            out[k] = [x + (v[i] if i < len(v) else 0) for i, x in enumerate(cur)]
        else:
            out[k] = out[k] + v
    return out


def split_summary(shards: list[ShardInfo], stats: dict[str, Any]) -> dict[str, Any]:
    rows = sum(s.rows for s in shards)
    masked = stats.get("masked_positions", 0)
    tokens = stats.get("tokens", 0)
    random_next = stats.get("next_sentence_random", 0)
    specials = 3 * stats.get("rows", 0)
    derived = {
        "next_sentence_random_fraction": _ratio(random_next, stats.get("rows", 0)),
        "masked_fraction": _ratio(masked, tokens - specials),
        "mask_split": {
            "mask_token": _ratio(stats.get("mask_token", 0), masked),
            "unchanged": _ratio(stats.get("mask_unchanged", 0), masked),
            "random_token": _ratio(stats.get("mask_random", 0), masked),
        },
        "unk_rate": _ratio(stats.get("unk_tokens", 0), tokens - specials),
        "mean_length": _ratio(tokens, stats.get("rows", 0)),
    }
    return {
        "rows": rows,
        "tokens": sum(s.tokens for s in shards),
        "shards": [vars(s) for s in sorted(shards, key=lambda s: s.path)],
        "stats": {**dict(sorted(stats.items())), **derived},
    }


def build_manifest(
    config: dict[str, Any],
    vocab: dict[str, Any],
    inputs: list[str],
    documents: dict[str, int],
    splits: dict[str, dict[str, Any]],
    scratch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``scratch``: the ``.parts/`` space the job used at its largest, against the output's bytes (all
    that is written there stays until the end); it depends on how the inputs were cut in parts, the
    one figure that does."""
    return seal({
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": config,
        "vocab": vocab,
        "inputs": inputs,
        "documents": dict(sorted(documents.items())),
        "splits": splits,
        **({"scratch": scratch} if scratch is not None else {}),
    })


def content_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical bytes, its own ``checksum`` key left out."""
    return hashlib.sha256(dumps({k: v for k, v in manifest.items() if k != "checksum"})).hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its ``checksum`` (re)computed."""
    return {**manifest, "checksum": content_checksum(manifest)}


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _ratio(a: float, b: float) -> float:
    return round(a / b, 6) if b else 0.0
