"""The input formats side by side: reading speed, the job's speed, and the reader's memory as inputs grow.

    python -m bench.input_formats [--sizes 100,1000] [--cache .bench-cache] [--work DIR]

Real text, fetched with ``apt-get download`` into ``--cache``: the Linux 6.1 kernel documentation
(``linux-doc-6.1``), one document per reStructuredText source, paragraphs as lines (~23 MB). The
same documents are written in each format:

* text: blank lines between documents (16 files); JSON Lines: ``{"text": ...}`` (16 files);
* Parquet: a ``text`` column, 1,000 rows per row group (4 files);
* a MediaWiki dump: ``*.xml.bz2`` in Wikipedia's multistream layout (100 pages per bz2 stream), each
  document an article in wikitext: its paragraphs with a link in each, a reference every third, an
  infobox, a heading, a category and an interlanguage link, and every tenth page a talk page and
  every seventh a redirect (the markup the reader removes; ``tests/wiki_dump.py``).

Measured, one process each, the peak resident memory sampled every 0.1 s:

1. **Reading**: every document of each format through the job's reader
   (:func:`preprocess.inputs.read_file`), one process: MB of input and of document text per second.
2. **The job**: ``python -m preprocess`` on each format (bert-base-uncased's vocabulary, seq 128,
   dupe factor 5, all cores): wall time and MB of document text per second.
3. **Memory as the input grows**: one Parquet file and one dump of ``--sizes`` MB of document text
   (the corpus replicated, each copy's lines given a distinct prefix so that no two are equal), read
   whole by one process: peak memory, which must not grow with the file.
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from bench.preprocess_throughput import fetch_package, fetch_vocab, rst_sources
from tests.wiki_dump import FOOTER, HEADER, page_xml, wiki_pages

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("text", "jsonl", "parquet", "mediawiki")
ROWS_PER_GROUP = 1000
PAGES_PER_STREAM = 100

READER = """
import sys, time
from collections import Counter
from preprocess.documents import ReadParams
from preprocess.inputs import read_file
stats, text, t = Counter(), 0, time.perf_counter()
for i, path in enumerate(sys.argv[1:]):
    for doc in read_file(i, path, ReadParams(), stats):
        text += sum(len(line.encode()) for line in doc.lines)
print(stats["documents_read"], text, time.perf_counter() - t)
"""


def documents(cache: Path) -> list[list[str]]:
    docs = []
    for src in rst_sources(fetch_package(cache, "linux-doc-6.1")):
        text = Path(src).read_text(encoding="utf-8", errors="replace")
        paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
        if paras:
            docs.append(paras)
    return docs


def copies(docs: list[list[str]], mb: float) -> list[list[str]]:
    """The documents repeated up to ``mb`` MB of text, each copy's lines prefixed by its number."""
    size = sum(len(line.encode()) + 1 for d in docs for line in d)
    out = []
    for k in range(max(1, round(mb * 1e6 / size))):
        out += [[f"c{k} {line}" for line in d] for d in docs] if k else docs
    return out


def write_format(fmt: str, docs: list[list[str]], out: Path, files: int) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    groups = [docs[i::files] for i in range(files)]
    paths = []
    for i, group in enumerate(groups):
        if fmt == "text":
            path = out / f"part-{i:02d}.txt"
            path.write_text("\n\n".join("\n".join(d) for d in group) + "\n", encoding="utf-8")
        elif fmt == "jsonl":
            path = out / f"part-{i:02d}.jsonl"
            path.write_text("".join(json.dumps({"text": "\n".join(d)}) + "\n" for d in group), encoding="utf-8")
        elif fmt == "parquet":
            path = out / f"part-{i:02d}.parquet"
            schema = pa.schema([("text", pa.string())])
            with pq.ParquetWriter(path, schema) as w:
                for j in range(0, len(group), ROWS_PER_GROUP):
                    texts = ["\n".join(d) for d in group[j : j + ROWS_PER_GROUP]]
                    w.write_table(pa.table({"text": texts}, schema=schema), row_group_size=ROWS_PER_GROUP)
        else:
            path = out / f"wiki-{i:02d}-pages-articles-multistream.xml.bz2"
            with open(path, "wb") as f:
                f.write(bz2.compress(HEADER.encode()))
                pages = wiki_pages(group)
                for j in range(0, len(pages), PAGES_PER_STREAM):
                    f.write(bz2.compress("".join(page_xml(**p) for p in pages[j : j + PAGES_PER_STREAM]).encode()))
                f.write(bz2.compress(FOOTER.encode()))
        paths.append(str(path))
    return paths


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MB of ``cmd`` with its children (sampled every 0.1 s), and its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - t
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{err[-2000:]}")
    return wall, peak / 1e6, out


def read_measured(paths: list[str]) -> dict:
    wall, peak, out = run_measured([sys.executable, "-c", READER, *paths])
    docs, text, seconds = out.split()
    input_mb = sum(os.path.getsize(p) for p in paths) / 1e6
    return {"documents": int(docs), "text_mb": int(text) / 1e6, "input_mb": input_mb, "seconds": float(seconds),
            "wall": wall, "peak_mb": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    ap.add_argument("--work", type=Path, help="where the inputs are written (default: a temporary directory)")
    ap.add_argument("--sizes", default="100,1000", help="MB of document text of the growing inputs (\"\": none)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-formats-"))
    docs = documents(args.cache)
    vocab = fetch_vocab(args.cache)
    print(f"corpus: {len(docs)} documents, {sum(len(x.encode()) + 1 for d in docs for x in d) / 1e6:.1f} MB; "
          f"work in {work}; {os.cpu_count()} cores", flush=True)

    print("\n| format | input MB | documents | text MB | reading s | reading MB/s of text | reader peak MB "
          "| job s | job MB/s of text |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for fmt in FORMATS:
        paths = write_format(fmt, docs, work / fmt, files=4 if fmt in ("parquet", "mediawiki") else 16)
        r = read_measured(paths)
        out = work / f"data-{fmt}"
        wall, _, _ = run_measured([sys.executable, "-m", "preprocess", "--input", str(work / fmt / "*"),
                                   "--output", str(out), "--vocab", str(vocab), "--max-seq-length", "128",
                                   "--dupe-factor", "5", "--num-shards", "16"])
        used = json.loads((out / "manifest.json").read_text())["documents"]["documents_used"]
        assert used == r["documents"], (fmt, used, r["documents"])
        print(f"| {fmt} | {r['input_mb']:.1f} | {r['documents']:,} | {r['text_mb']:.1f} | {r['seconds']:.2f} "
              f"| {r['text_mb'] / r['seconds']:.1f} | {r['peak_mb']:.0f} | {wall:.1f} | {r['text_mb'] / wall:.2f} |",
              flush=True)

    print("\n| format | text MB | input MB | reading s | MB/s of text | peak MB of the reading process |"
          "\n|---|---|---|---|---|---|", flush=True)
    for mb in [float(x) for x in args.sizes.split(",") if x]:
        big = copies(docs, mb)
        for fmt in ("parquet", "mediawiki"):
            paths = write_format(fmt, big, work / f"{fmt}-{mb:.0f}", files=1)
            r = read_measured(paths)
            print(f"| {fmt} | {r['text_mb']:.0f} | {r['input_mb']:.0f} | {r['seconds']:.1f} | "
                  f"{r['text_mb'] / r['seconds']:.1f} | {r['peak_mb']:.0f} |", flush=True)
            for p in paths:
                os.remove(p)
        del big


if __name__ == "__main__":
    main()
