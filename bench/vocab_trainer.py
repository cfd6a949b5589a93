"""Our WordPiece trainer against ``tokenizers``' WordPieceTrainer, side by side in one run.

    python -m bench.vocab_trainer [--vocab-size 30522] [--big-mb 200]

Real text, fetched with ``apt-get download`` into ``--cache``:
  * training: the Linux 6.1 kernel documentation (``linux-doc-6.1``), one document per
    reStructuredText source, paragraphs as lines (~23 MB);
  * held out, neither used for training: the Python 3.11 documentation (``python3.11-doc``,
    ~10 MB) and the fortune cookies of Debian's ``fortunes`` (quotations, jokes and literature,
    ~2 MB of English prose).

Measured:
  * reproducibility: ours at 1 and 2 worker processes, the library's trainer twice (entries that
    differ between its two runs);
  * quality on each held-out corpus: WordPiece tokens per word and ``[UNK]`` tokens, each vocabulary
    encoding through the same ``tokenizers`` WordPiece model;
  * time on the training corpus, both on every core;
  * time and peak resident memory (the process and its children, sampled every 0.1 s) of
    ``bert-train-vocab`` and of the library's trainer on the training corpus and on ``--big-mb`` MB
    (the corpus written out again as more files, so the distinct words stay those of 23 MB: what
    grows is the text read).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from bench.preprocess_throughput import build_corpus, fetch_package, rst_sources
from preprocess.documents import ReadParams
from preprocess.tokenization import MAX_INPUT_CHARS_PER_WORD, SPECIAL_TOKENS, wordpiece_tokenizer
from preprocess.vocab import corpus_lines
from preprocess.word_counts import count_words

ROOT = Path(__file__).resolve().parents[1]

LIBRARY_TRAINER = f"""
import sys
from collections import Counter
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from preprocess.documents import ReadParams
from preprocess.vocab import corpus_lines
files, size, out = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word={MAX_INPUT_CHARS_PER_WORD}))
tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                            lowercase=True)
tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=2, limit_alphabet=1000,
                                    special_tokens={list(SPECIAL_TOKENS)!r}, continuing_subword_prefix="##", show_progress=False)
tok.train_from_iterator(corpus_lines(files, ReadParams(), Counter()), trainer=trainer)
vocab = tok.get_vocab()
open(out, "w", encoding="utf-8").write("\\n".join(sorted(vocab, key=vocab.get)) + "\\n")
"""


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of ``cmd`` with its children, sampled every 0.1 s."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    me, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return wall, peak / 2**20


def ours_cmd(files: list[str], out: Path, size: int, workers: int) -> list[str]:
    inputs = [a for f in files for a in ("--input", f)]
    return [sys.executable, "-m", "preprocess.vocab", *inputs, "--output", str(out), "--vocab-size", str(size),
            "--workers", str(workers)]


def library_cmd(files: list[str], out: Path, size: int) -> list[str]:
    return [sys.executable, "-c", LIBRARY_TRAINER, ",".join(files), str(size), str(out)]


def fortune_documents(root: Path) -> list[list[str]]:
    docs = []
    for f in sorted((root / "usr" / "share" / "games" / "fortunes").iterdir()):
        if f.suffix == ".dat" or f.is_symlink() or f.is_dir() or f.name == "ascii-art":
            continue
        for cookie in f.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            if cookie.strip():
                docs.append([" ".join(cookie.split())])
    return docs


def quality(vocab: list[str], lines: list[str]) -> tuple[float, int, int]:
    """Tokens per word, [UNK] tokens and words of ``lines`` under ``vocab``."""
    tok = wordpiece_tokenizer({t: i for i, t in enumerate(vocab)}, lower_case=True)
    unk = tok.token_to_id("[UNK]")
    tokens = unks = 0
    for i in range(0, len(lines), 10000):
        for e in tok.encode_batch(lines[i:i + 10000], add_special_tokens=False):
            tokens += len(e.ids)
            unks += e.ids.count(unk)
    words = sum(count_words(lines).values())
    return tokens / words, unks, words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench-cache")
    ap.add_argument("--vocab-size", type=int, default=30522)
    ap.add_argument("--big-mb", type=int, default=200, help="the memory run's input size")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-vocab-"))
    train_files, train_mb = build_corpus(rst_sources(fetch_package(args.cache, "linux-doc-6.1")), work / "train")
    python_files, python_mb = build_corpus(rst_sources(fetch_package(args.cache, "python3.11-doc")), work / "py")
    fortune_dir = work / "fortunes"
    fortune_dir.mkdir()
    docs = fortune_documents(fetch_package(args.cache, "fortunes"))
    (fortune_dir / "fortunes.txt").write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    held_out = {
        f"Python 3.11 docs ({python_mb:.1f} MB)": python_files,
        f"fortunes ({(fortune_dir / 'fortunes.txt').stat().st_size / 1e6:.1f} MB)": [str(fortune_dir / "fortunes.txt")],
    }
    print(f"training: Linux 6.1 docs, {train_mb:.1f} MB; vocab size {args.vocab_size}; {cores} cores")

    # reproducibility and time on the training corpus, both trainers on every core
    runs = {}
    for name, cmd in (("ours, 1 worker", ours_cmd(train_files, work / "o1.txt", args.vocab_size, 1)),
                      (f"ours, {cores} workers", ours_cmd(train_files, work / "o2.txt", args.vocab_size, cores)),
                      ("tokenizers, run 1", library_cmd(train_files, work / "l1.txt", args.vocab_size)),
                      ("tokenizers, run 2", library_cmd(train_files, work / "l2.txt", args.vocab_size))):
        runs[name] = run_measured(cmd)
    texts = {p: (work / p).read_text(encoding="utf-8").splitlines() for p in ("o1.txt", "o2.txt", "l1.txt", "l2.txt")}
    print(f"\n{'trainer on the training corpus':34s} {'seconds':>8s} {'peak MB':>8s}")
    for name, (sec, mb) in runs.items():
        print(f"{name:34s} {sec:8.2f} {mb:8.0f}")
    ours_t, lib_t = runs[f"ours, {cores} workers"][0], runs["tokenizers, run 1"][0]
    print(f"ours / tokenizers speed: {lib_t / ours_t:.2f} (target >= 0.5)")
    print(f"ours at 1 and {cores} workers byte-identical: {texts['o1.txt'] == texts['o2.txt']}; "
          f"tokenizers' two runs: {len(set(texts['l1.txt']) ^ set(texts['l2.txt'])) // 2} entries differ, "
          f"{sum(a != b for a, b in zip(texts['l1.txt'], texts['l2.txt']))} lines at another position")

    print(f"\n{'held-out corpus':28s} {'words':>10s} {'tok/word ours':>14s} {'tokenizers':>11s} {'ratio':>7s} "
          f"{'[UNK] ours':>11s} {'tokenizers':>11s}")
    for name, files in held_out.items():
        lines = list(corpus_lines(files, ReadParams(), Counter()))
        ours, o_unk, words = quality(texts["o1.txt"], lines)
        lib, l_unk, _ = quality(texts["l1.txt"], lines)
        print(f"{name:28s} {words:10d} {ours:14.4f} {lib:11.4f} {ours / lib:7.4f} {o_unk:11d} {l_unk:11d}")
    print("target: ratio <= 1.01, [UNK] ours <= tokenizers")

    # memory against input size: the text replicated into more files
    big = work / "big"
    big.mkdir()
    copies = max(1, round(args.big_mb / train_mb))
    for k in range(copies):
        for f in train_files:
            shutil.copy(f, big / f"{k:03d}-{Path(f).name}")
    big_files = sorted(str(p) for p in big.glob("*.txt"))
    big_mb = sum(os.path.getsize(p) for p in big_files) / 1e6
    print(f"\n{'peak memory and time':34s} {'input MB':>8s} {'seconds':>8s} {'peak MB':>8s}")
    for name, cmd in ((f"ours, {cores} workers", ours_cmd(big_files, work / "ob.txt", args.vocab_size, cores)),
                      ("tokenizers", library_cmd(big_files, work / "lb.txt", args.vocab_size))):
        sec, mb = run_measured(cmd)
        small = runs[f"ours, {cores} workers" if name.startswith("ours") else "tokenizers, run 1"]
        print(f"{name:34s} {train_mb:8.0f} {small[0]:8.2f} {small[1]:8.0f}")
        print(f"{name:34s} {big_mb:8.0f} {sec:8.2f} {mb:8.0f}   ({mb / small[1]:.2f}x the memory for "
              f"{big_mb / train_mb:.1f}x the text)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
