"""bert-train-vocab end to end: the same text gives the same vocabulary bytes, run after run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess import vocab
from preprocess.tokenization import SPECIAL_TOKENS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def train(corpus_dir: Path, out: Path, *extra: str, hash_seed: str) -> subprocess.Popen:
    # every process its own hash seed: the order of Python's sets and dicts of strings changes with it
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed}
    return subprocess.Popen([sys.executable, "-m", "preprocess.vocab", "--input", str(corpus_dir / "*.txt"),
                             "--output", str(out), "--vocab-size", "3000", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_three_runs_at_one_and_two_workers_write_the_same_bytes(corpus_dir, vocab_file, tmp_path):
    runs = {name: (tmp_path / f"{name}.txt", train(corpus_dir, tmp_path / f"{name}.txt", *extra, hash_seed=seed))
            for name, extra, seed in (("one", ("--workers", "1", "--tokenizer-json", str(tmp_path / "tokenizer.json")), "1"),
                                      ("two", ("--workers", "2"), "2"),
                                      ("again", ("--workers", "2"), "3"))}
    for out, proc in runs.values():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert f"wrote 3000 tokens to {out}" in stdout
        assert stderr == "", stderr  # no third party's notices
    texts = {name: out.read_bytes() for name, (out, _) in runs.items()}
    assert texts["one"] == texts["two"] == texts["again"]
    # and the in-process training the other tests use gives the same bytes too
    assert Path(vocab_file).read_bytes() == texts["one"]
    tokens = texts["one"].decode().splitlines()
    assert tokens[:5] == list(SPECIAL_TOKENS) and len(set(tokens)) == 3000
    assert {"the", "##s", "function"} <= set(tokens)
    # the tokenizer written beside it is the job's: the same vocabulary, normalisation and splitting
    from tokenizers import Tokenizer

    from preprocess.tokenization import TokenizerSpec, build_tokenizer

    text = "Return a new dictionary, initialized from an optional positional argument: Ünïcödé!"
    written = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert written == build_tokenizer(TokenizerSpec(str(runs["one"][0]))).encode(text, add_special_tokens=False).ids


def test_parquet_and_wikipedia_dumps_give_the_vocabulary_of_their_text(corpus_dir, parquet_corpus, wiki_corpus,
                                                                        corpus_docs, tmp_path, capsys):
    from preprocess.example import write_corpus
    from tests.wiki_dump import plain_documents

    def trained(*args: str) -> bytes:
        out = tmp_path / "vocab.txt"
        assert vocab.main([*args, "--output", str(out), "--vocab-size", "2000", "--workers", "1"]) == 0
        return out.read_bytes()

    # a Parquet row's text is the document's lines: the words of the text corpus
    assert trained("--input", str(parquet_corpus / "*.parquet")) == trained("--input", str(corpus_dir / "*.txt"))
    assert "parquet_null_text" in capsys.readouterr().out
    # an article reads back as its paragraphs: the words of those paragraphs as plain text
    plain = write_corpus(tmp_path / "plain", [d for i, d in enumerate(plain_documents(corpus_docs))
                                              if i % 10 != 9 and i % 7 != 6])
    assert trained("--input", str(wiki_corpus / "*")) == trained("--input", *[str(p) for p in plain][:1],
                                                                 *[a for p in plain[1:] for a in ("--input", str(p))])
    assert "wiki_redirect" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--vocab-size", "5"), ("--min-frequency", "-1"),
                                         ("--limit-alphabet", "0"), ("--workers", "0")])
def test_bad_options_are_one_clear_line(flag, value, corpus_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        vocab.main(["--input", str(corpus_dir / "*.txt"), "--output", str(tmp_path / "v.txt"), flag, value])
    assert e.value.code == 2
    assert f"{flag} {value}: must be at least" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "v.txt").exists()
