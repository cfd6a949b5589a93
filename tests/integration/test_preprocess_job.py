"""The preprocessing job end to end, through its real entry points."""

import bz2
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.reference_bert import ReferenceTokenizer, create_instances
from preprocess.documents import document_source
from preprocess.example import write_corpus
from preprocess.reader import PretrainingDataset
from tests.conftest import run_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(*args, check=True, python_flags=()):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *python_flags, "-m", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def files_of(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_cli_runs_on_all_cores_and_inspect_decodes_rows(corpus_dir, vocab_file, tmp_path):
    out = tmp_path / "data"
    proc = cli("preprocess", "--input", str(corpus_dir / "part-00[0-3].txt"), "--input", str(corpus_dir / "part-00[4-7].txt"),
               "--output", str(out), "--vocab", vocab_file, "--max-seq-length", "128", "--dupe-factor", "1",
               "--num-shards", "3", python_flags=("-X", "importtime"))
    assert "train:" in proc.stdout and "NotNext" in proc.stdout
    # Beam probes for IPython at every transform; the command tells it at once that it is not
    # interactive, so IPython (where installed) is never imported: 0.35 s of start-up.
    assert "IPython.core" not in proc.stderr and "apache_beam.runners" in proc.stderr
    # progress from the worker processes, through the side channel: every file, every shard
    assert "preprocess: 8/8 files" in proc.stderr and "shards 3/3" in proc.stderr
    # nothing else: no third-party notices from the pipeline's construction (e.g. Beam's on type hints
    # it cannot use) or from the worker processes' start-up (preprocess.worker)
    ours = ("import time:", "preprocess: ", "INFO preprocess: ")
    assert [x for x in proc.stderr.splitlines() if not x.startswith(ours)] == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["inputs"]) == 8
    ds = PretrainingDataset(str(out), verify="checksum")
    assert len(ds) == manifest["splits"]["train"]["rows"]
    shown = cli("preprocess", "inspect", str(out), "--samples", "4").stdout
    for needle in ("[CLS]", "[SEP]", "[MASK]/", "length histogram", "A: ", "B: ", "masked ", "legend: ",
                   "padding: ", "packed (data.packing"):
        assert needle in shown
    assert "IsNext" in shown or "NotNext" in shown


def test_same_input_and_seed_give_identical_bytes_for_1_and_2_workers_and_any_grouping_of_buckets(
        corpus_dir, vocab_file, tmp_path, monkeypatch):
    import preprocess.pipeline
    import preprocess.sizing

    args = ("--max-seq-length", "96", "--dupe-factor", "2", "--num-shards", "5", "--validation-fraction", "0.05",
            "--whole-word-mask")
    one = tmp_path / "one"
    two = tmp_path / "two"
    # buckets of 64 KB of text (14 in the train split) as a corpus of gigabytes has buckets of 32 MB
    monkeypatch.setattr(preprocess.sizing, "BUCKET_TEXT_BYTES", 64 << 10)
    # Beam checks every element against the stages' type hints as it runs (a GroupByKey's values are
    # an Iterable, never a list, ...): the hints are true, and checking changes no byte
    run_job([str(corpus_dir / "*.txt")], one, vocab_file, *args, "--runtime_type_check", workers=1)
    # buckets in groups of 7, as a terabyte's buckets travel (one group per bucket until then)
    monkeypatch.setattr(preprocess.pipeline, "group_count", lambda buckets: max(1, buckets // 7))
    run_job([str(corpus_dir / "*.txt")], two, vocab_file, *args, workers=2)
    a, b = files_of(one), files_of(two)
    assert a.keys() == b.keys() and len(a) == 5 + 1 + 2  # shards, validation shard, manifest, vocab
    assert all(a[k] == b[k] for k in a if k != "manifest.json")
    # the scratch counts the groups' blocks spread into files per bucket too; all else is the same
    assert without_scratch(a["manifest.json"]) == without_scratch(b["manifest.json"])
    scratch = [json.loads(m["manifest.json"])["scratch"]["peak_bytes"] for m in (a, b)]
    assert scratch[0] < scratch[1]
    other = tmp_path / "other-seed"
    run_job([str(corpus_dir / "*.txt")], other, vocab_file, *args, "--seed", "7", workers=1)
    c = files_of(other)
    assert c["train/shard-00000-of-00005.arrow"] != a["train/shard-00000-of-00005.arrow"]


def without_scratch(manifest: bytes) -> dict:
    """A manifest less the one figure that depends on how the inputs were cut in parts."""
    m = json.loads(manifest)
    assert m.pop("scratch")["peak_bytes"] > 0
    return {k: v for k, v in m.items() if k != "checksum"}


def start_and_stop(argv: list[str], out: Path, sig: signal.Signals) -> int:
    """Start the job in a process of its own, send ``sig`` once it has written scratch files; its exit status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "preprocess", *argv], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any((out / ".parts").glob("*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before it could be stopped"
    if sig == signal.SIGKILL:  # as the machine's end would: the launcher and its workers at once
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    return proc.wait(timeout=120)


def test_a_stopped_or_killed_job_leaves_no_dataset_and_a_rerun_completes_it(corpus_docs, vocab_file, tmp_path):
    write_corpus(tmp_path / "corpus", corpus_docs * 3, files=4)
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "corpus" / "*.txt"), "--output", str(out), "--vocab", vocab_file,
            "--max-seq-length", "64", "--dupe-factor", "2", "--direct_num_workers=2"]
    # SIGTERM (Slurm's time limit, scancel): the job stops through its clean-up, scratch removed
    assert start_and_stop(argv, out, signal.SIGTERM) == 143
    assert not (out / "manifest.json").exists() and not (out / ".parts").exists()
    assert not list(out.rglob("*.arrow"))
    # SIGKILL: nothing can clean up; no manifest, so nothing reads it as a dataset
    assert start_and_stop(argv, out, signal.SIGKILL) == -signal.SIGKILL
    assert not (out / "manifest.json").exists() and any((out / ".parts").glob("*"))
    # the same command again, into the same directory: the dataset a clean run makes
    cli("preprocess", *argv)
    cli("preprocess", *[a if a != str(out) else str(tmp_path / "clean") for a in argv])
    a, b = files_of(out), files_of(tmp_path / "clean")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a) and "manifest.json" in a


def _tokenizer_pool_size(vocab_file: str) -> str:
    from preprocess.stages.tokenize import _TokenizeFn
    from preprocess.tokenization import TokenizerSpec

    os.environ.pop("RAYON_NUM_THREADS", None)
    _TokenizeFn(TokenizerSpec(vocab_file), 64, "uint16").setup()
    return os.environ["RAYON_NUM_THREADS"]


def nsp_contract(out: Path) -> list[dict]:
    """Every row of a dataset: 50/50 IsNext/NotNext, NotNext B from another document, IsNext from A's."""
    ds = PretrainingDataset(str(out), verify="checksum")
    rows = ds.rows(np.arange(len(ds)))
    nsp = np.array([r["next_sentence_label"] for r in rows])
    assert len(rows) > 500 and abs(nsp.mean() - 0.5) < 4 * np.sqrt(0.25 / len(rows))
    assert all((r["doc_id_a"] != r["doc_id_b"]) == bool(r["next_sentence_label"]) for r in rows)
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "mediawiki", "text"])
def test_text_parquet_and_wikipedia_dumps_give_identical_bytes_for_1_and_2_workers_and_any_part_size(
        fmt, parquet_corpus, wiki_corpus, corpus_dir, corpus_docs, vocab_file, tmp_path, capsys):
    from tests.wiki_dump import plain_documents

    # a Parquet dataset given as its directory, the dumps and text files as globs
    inputs = {"parquet": [str(parquet_corpus)], "mediawiki": [str(wiki_corpus / "*")],
              "text": [str(corpus_dir / "*.txt")]}[fmt]
    args = ("--max-seq-length", "96", "--dupe-factor", "2", "--num-shards", "3", "--validation-fraction", "0.05")
    one = run_job(inputs, tmp_path / "one", vocab_file, *args, workers=1)
    # two workers, and every file read in parts of 16 KB (row groups, bz2 streams, pages, blank-line
    # separated documents) by both
    run_job(inputs, tmp_path / "two", vocab_file, *args, "--input-part-bytes", "16384", workers=2)
    assert "file parts" in capsys.readouterr().err
    a, b = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) == 3 + 1 + 2 and all(a[k] == b[k] for k in a if k != "manifest.json")
    assert without_scratch(a["manifest.json"]) == without_scratch(b["manifest.json"])
    docs = one["documents"]
    assert docs["documents_used"] == docs["documents_read"]
    rows = nsp_contract(tmp_path / "one")
    sources = {document_source(r[k]) for r in rows for k in ("doc_id_a", "doc_id_b")}
    if fmt == "parquet":  # (file, row): the row of its file that holds the document
        assert docs["documents_read"] == len(corpus_docs) and docs["parquet_null_text"] == 3
        sizes = [(len(corpus_docs) - i + 2) // 3 for i in range(3)]
        assert all(f < 3 and row < sizes[f] for f, row in sources)
    elif fmt == "text":  # (file, byte offset): where the document starts in its file
        assert docs["documents_read"] == len(corpus_docs)
        texts = {i: p.read_bytes() for i, p in enumerate(sorted(corpus_dir.glob("*.txt")))}
        assert all(offset == 0 or texts[f][offset - 2 : offset] == b"\n\n" for f, offset in sources)
    else:  # (file, page id): articles only; talk pages and redirects counted
        plain = plain_documents(corpus_docs)
        talk, redirects = sum(i % 10 == 9 for i in range(len(plain))), sum(i % 10 != 9 and i % 7 == 6
                                                                         for i in range(len(plain)))
        assert (docs["wiki_not_article"], docs["wiki_redirect"]) == (talk, redirects)
        assert docs["documents_read"] == len(plain) - talk - redirects
        assert all(f < 2 and (page - 10) % 2 == 0 and (page - 10) // 2 % 10 != 9 for f, page in sources)


def test_dask_runner_on_two_worker_processes_gives_the_local_runners_bytes_though_a_worker_is_killed(
        corpus_dir, vocab_file, dataset, tmp_path):
    """Beam's Dask runner gives the local runner's bytes, even when a worker process dies mid-job (killed
    once the pairs are being spilled): Dask runs the lost tasks again, and a task run twice writes the
    same files again, not more files."""
    import signal
    import threading

    from distributed import Client, LocalCluster

    out = tmp_path / "data"
    with (LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster,
          Client(cluster) as client):
        # in a Dask worker, the tokenizer's thread pool is the worker's share of the cores: its threads
        pools = [client.submit(_tokenizer_pool_size, vocab_file, workers=[w], pure=False).result()
                 for w in client.nthreads()]
        assert pools == ["2", "2"]
        victim = sorted(client.run(os.getpid).values())[0]
        killed = threading.Event()

        def kill_mid_job():
            deadline = time.time() + 120
            while time.time() < deadline and not any((out / ".parts").glob("**/*")):
                time.sleep(0.02)
            if not (out / "manifest.json").exists():
                os.kill(victim, signal.SIGKILL)
                killed.set()

        killer = threading.Thread(target=kill_mid_job, daemon=True)
        killer.start()
        # the `dataset` fixture's arguments, which the local runner ran
        run_job([str(corpus_dir / "*.txt")], out, vocab_file, "--max-seq-length", "64", "--dupe-factor", "2",
                "--num-shards", "4", "--validation-fraction", "0.05", "--runner", "dask",
                f"--dask_client_address={cluster.scheduler_address}")
        killer.join(timeout=5)
        assert killed.is_set()  # mid-job: before the manifest was written
        assert victim not in client.run(os.getpid).values()  # the nanny started a new worker process
    assert files_of(out) == files_of(dataset)  # every shard, the manifest: byte-identical; no .parts/ left


def test_rerun_into_the_same_directory_replaces_the_dataset(corpus_dir, vocab_file, tmp_path):
    out = tmp_path / "data"
    run_job([str(corpus_dir / "part-000.txt")], out, vocab_file, "--num-shards", "4")
    run_job([str(corpus_dir / "part-000.txt")], out, vocab_file, "--num-shards", "2")
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "shard-00000-of-00002.arrow", "shard-00001-of-00002.arrow"]
    PretrainingDataset(str(out), verify="checksum")


@pytest.fixture
def bad_corpus(tmp_path, corpus_docs):
    d = tmp_path / "bad"
    good = write_corpus(d, corpus_docs[:40], files=2)
    (d / "latin1.txt").write_bytes("Un café très chaud. Le thé aussi.\nOui.\n".encode("latin-1"))
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64)
    (d / "empty.txt").write_bytes(b"")
    (d / "nul.txt").write_bytes(b"\x00" * 4096)  # NUL bytes only
    (d / "fake.txt.gz").write_bytes(b"Plain text that claims to be gzip.\n")
    (d / "one-sentence.txt").write_text("Only one sentence here.\n\nAnother lone sentence.\n")
    (d / "control.txt").write_text("Bell\x07 and\x1b escape \x00chars are dropped. Text stays.\n")
    (d / "scripts.txt").write_text("東京は大きな都市です。人が多い。\n\nМосква — столица. Там холодно.\n")
    with open(d / "huge-line.txt", "wb") as f:  # a 50 MB line without whitespace, then a document
        f.write(b"x" * (50 << 20) + b"\n\nA normal document after the long line. It is kept.\n")
    (d / "long-words.txt").write_text(" ".join(["word"] * 600_000) + "\n")  # 3 MB line with spaces
    with gzip.open(d / "docs.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "Compressed JSON document. With two sentences."}) + "\n{broken\n")
    with bz2.open(d / "more.txt.bz2", "wt") as f:
        f.write("Bzip2 document one. Second sentence.\n\nBzip2 document two.\n")
    filler = "\n".join(f"Filler line {i} says {i * 7919 % 10007} things." for i in range(3000)).encode()
    packed = gzip.compress(b"Kept document.\n\n" + filler)
    (d / "truncated.txt.gz").write_bytes(packed[: len(packed) // 2])
    return d, good


def test_bad_input_is_counted_and_every_usable_document_contributes(bad_corpus, vocab_file, tmp_path):
    d, good = bad_corpus
    out = tmp_path / "out"
    manifest = run_job([str(d / "*")], out, vocab_file, "--dupe-factor", "3", "--num-shards", "2", workers=2)
    docs = manifest["documents"]
    assert docs["file_binary"] == 2  # image.png, nul.txt
    assert docs["file_empty"] == 1
    assert docs["file_corrupt"] == 2  # truncated.txt.gz, fake.txt.gz
    assert docs["line_invalid_utf8"] == 1
    assert docs["line_too_long_split"] == 49 + 2  # cuts: 50 MiB into 1 MiB pieces; 3 MB line into 3
    assert docs["document_too_large_split"] == 3  # 50 MiB of one document over 16 MiB parts
    assert docs["json_invalid"] == 1
    inputs = manifest["inputs"]
    ds = PretrainingDataset(str(out))
    seen = {document_source(ds[i]["doc_id_a"]) for i in range(len(ds))}
    seen_files = {inputs[f].rsplit("/", 1)[1] for f, _ in seen}
    for name in ("latin1.txt", "one-sentence.txt", "control.txt", "scripts.txt", "huge-line.txt",
                 "long-words.txt", "docs.jsonl.gz", "more.txt.bz2", "truncated.txt.gz", *(p.name for p in good)):
        assert name in seen_files, name
    # every document of the good files is used as segment A somewhere
    good_docs = sum(1 for p in good for block in p.read_text().split("\n\n") if block.strip())
    good_seen = {x for x in seen if inputs[x[0]].rsplit("/", 1)[1] in {p.name for p in good}}
    assert len(good_seen) == good_docs
    assert docs["documents_used"] == docs["documents_read"]


def test_statistics_of_a_few_thousand_instances(dataset):
    ds = PretrainingDataset(str(dataset))
    n = len(ds)
    rows = [ds[i] for i in range(n)]
    nsp = np.array([r["next_sentence_label"] for r in rows])
    assert n > 3000
    assert abs(nsp.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    for r in rows:  # no same-document negatives, and positives always from one document
        assert (r["doc_id_a"] != r["doc_id_b"]) == bool(r["next_sentence_label"])
    stats = ds.info.split("train").stats
    masked = sum(len(r["masked_lm_positions"]) for r in rows)
    lengths = np.array([len(r["input_ids"]) for r in rows])
    expected = np.minimum(np.minimum(20, np.maximum(1, np.round(lengths * 0.15))), lengths - 3).sum()
    assert masked == expected == stats["masked_positions"]
    for key, p in (("mask_token", 0.8), ("mask_unchanged", 0.1), ("mask_random", 0.1)):
        assert abs(stats[key] - masked * p) < 4 * np.sqrt(masked * p * (1 - p)), key
    mask_id = ds.info.token_id("[MASK]")
    shown = sum(int((r["input_ids"][r["masked_lm_positions"]] == mask_id).sum()) for r in rows)
    assert shown == stats["mask_token"]
    assert sum(stats["length_histogram"]) == n


def test_nsp_is_balanced_where_the_reference_is_biased(corpus_dir, vocab_file, tmp_path):
    files = sorted(str(p) for p in corpus_dir.glob("*.txt"))
    ref = create_instances(files, ReferenceTokenizer(vocab_file), max_seq_length=128, dupe_factor=1)
    ref_random = np.mean([i.is_random_next for i in ref])
    manifest = run_job([str(corpus_dir / "*.txt")], tmp_path / "o", vocab_file, "--dupe-factor", "3", workers=2)
    stats = manifest["splits"]["train"]["stats"]
    ours = stats["next_sentence_random_fraction"]
    assert ref_random > 0.5 + 4 * np.sqrt(0.25 / len(ref))  # the reference's known bias
    assert abs(ours - 0.5) < 4 * np.sqrt(0.25 / stats["rows"])


def test_bad_options_fail_before_any_work_with_a_clear_message(corpus_dir, vocab_file, tmp_path):
    proc = cli("preprocess", "--input", str(tmp_path / "nothing-*.txt"), "--output", str(tmp_path / "o"),
               "--vocab", vocab_file, check=False)
    assert proc.returncode == 2 and "no files match" in proc.stderr
    proc = cli("preprocess", "--input", str(corpus_dir / "*.txt"), "--output", str(tmp_path / "o"),
               "--vocab", vocab_file, "--max-seq-length", "4", "--masked-lm-prob", "0", check=False)
    assert proc.returncode == 2
    assert "--max-seq-length 4" in proc.stderr and "--masked-lm-prob 0.0" in proc.stderr
    bad_vocab = tmp_path / "v.txt"
    bad_vocab.write_text("[UNK]\na\n")
    proc = cli("preprocess", "--input", str(corpus_dir / "*.txt"), "--output", str(tmp_path / "o"),
               "--vocab", str(bad_vocab), check=False)
    assert proc.returncode == 2 and "lacks BERT special tokens" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_readme_example_command_twice_from_raw_text_gives_the_same_bytes(tmp_path):
    """Corpus, vocabulary (trained in each run) and dataset: every byte the same in two runs."""
    runs = []
    for name in ("one", "two"):  # into the same path (the manifest records it), then moved aside
        runs.append(cli("preprocess.example", "--output", str(tmp_path / "demo")))
        (tmp_path / "demo").rename(tmp_path / name)
    assert all("train:" in proc.stdout and "[MASK]/" in proc.stdout for proc in runs)
    ds = PretrainingDataset(str(tmp_path / "one" / "data"), "validation", verify="checksum")
    assert len(ds) > 0
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert {"vocab.txt", "data/vocab.txt", "data/manifest.json"} <= one.keys()
    assert any(k.startswith("data/train/shard-") for k in one)
    assert one == two
