"""Shared test data, made here from text every Python installation carries.

The corpus is the standard library's own docstrings (real English technical prose,
~600 documents), plus a few hand-written documents in other scripts. The vocabulary
is trained on it with our own trainer.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from pathlib import Path

import pytest

MODULES = (
    "json argparse collections functools itertools os pathlib re subprocess threading asyncio logging "
    "unittest email.message http.client urllib.request datetime decimal fractions statistics random "
    "textwrap typing dataclasses enum inspect ast zipfile tarfile shutil tempfile socket ssl sqlite3 csv "
    "configparser heapq bisect struct codecs difflib pprint pickle copy contextlib abc io calendar hashlib "
    "secrets uuid base64 gzip bz2 lzma glob fnmatch locale gettext string operator numbers queue sched "
    "selectors multiprocessing concurrent.futures xml.etree.ElementTree html.parser doctest pdb timeit "
    "trace traceback warnings optparse shlex cmd code pkgutil importlib runpy sysconfig smtplib imaplib "
    "ftplib mailbox wave pydoc zoneinfo graphlib ipaddress netrc plistlib tomllib compileall dis "
    "pickletools filecmp fileinput tabnanny pyclbr symtable reprlib types weakref zipapp webbrowser "
    "xmlrpc.client http.server socketserver urllib.parse unittest.mock logging.handlers email.parser"
).split()

MULTILINGUAL = [
    ["Die Katze schläft auf dem Sofa. Der Hund bellt im Garten.", "Später gehen beide spazieren."],
    ["Le café est très chaud. Élodie préfère le thé.", "Ils partent à midi."],
    ["猫が寝ている。犬が吠える。", "東京は大きな都市です。"],
    ["Москва — столица России. Там живёт много людей.", "Зимой там холодно."],
    ["北京是中国的首都。上海是一个大城市。", "他们说中文。"],
    ["Ο σκύλος τρέχει γρήγορα. Η γάτα κοιμάται.", "Αύριο θα βρέξει."],
]


def stdlib_documents() -> list[list[str]]:
    """One document per documented module-level object: its docstring's paragraphs as lines."""
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                mod = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a module missing on some platform is skipped
                continue
            for _, obj in [(name, mod)] + sorted(inspect.getmembers(mod), key=lambda kv: kv[0]):
                if obj is not mod and getattr(obj, "__module__", None) != mod.__name__:
                    continue
                doc = inspect.getdoc(obj)
                if doc and len(doc) > 300:
                    paras = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
                    docs.append(paras)
    return docs


def write_corpus(directory: Path, docs: list[list[str]], files: int = 8) -> list[Path]:
    """Spread documents over ``files`` text files, blank lines between documents."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"part-{i:03d}.txt" for i in range(files)]
    chunks: list[list[str]] = [[] for _ in range(files)]
    for i, d in enumerate(docs):
        chunks[i % files].append("\n".join(d))
    for p, c in zip(paths, chunks):
        p.write_text("\n\n".join(c) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="session")
def corpus_docs() -> list[list[str]]:
    return stdlib_documents() + MULTILINGUAL


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, corpus_docs) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(d, corpus_docs)
    return d


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory, corpus_dir) -> str:
    from preprocess.vocab import train_vocab, write_vocab_txt

    out = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    files = sorted(str(p) for p in corpus_dir.glob("*.txt"))
    tok, _ = train_vocab(files, vocab_size=3000)
    write_vocab_txt(tok, str(out))
    return str(out)


def run_job(inputs: list[str], output: Path, vocab: str, *extra: str, workers: int = 1) -> dict:
    """Run the real job through its command-line parser."""
    from preprocess.config import parse_args
    from preprocess.job import run

    argv = [a for i in inputs for a in ("--input", i)] + ["--output", str(output), "--vocab", vocab]
    argv += list(extra) + [f"--direct_num_workers={workers}"]
    cfg, beam_args = parse_args(argv)
    return run(cfg, beam_args)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, corpus_dir, vocab_file) -> Path:
    """The real corpus preprocessed once (seq 64, two passes, validation split), shared by tests."""
    out = tmp_path_factory.mktemp("dataset")
    run_job(
        [str(corpus_dir / "*.txt")], out, vocab_file,
        "--max-seq-length", "64", "--dupe-factor", "2", "--num-shards", "4",
        "--validation-fraction", "0.05", workers=2,
    )
    return out


os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
