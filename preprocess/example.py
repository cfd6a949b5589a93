"""A small built-in example: a real corpus every Python installation carries.

``python -m preprocess.example --output demo`` writes ``demo/corpus`` (the standard
library's own docstrings, ~600 documents of English technical prose, plus a few
documents in other scripts), trains ``demo/vocab.txt`` on it, preprocesses it into
``demo/data`` with the real job on all cores, and prints ``inspect``'s report.
The tests use the same corpus.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import sys
import warnings
from pathlib import Path

from preprocess.cli import parser

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


# Modules that act when imported (open a browser, print, need a display) or hold no prose.
UNSAFE = {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle", "pydoc_data", "lib2to3",
          "ensurepip", "venv", "__phello__"}


def stdlib_documents(full: bool = False) -> list[list[str]]:
    """One document per documented object: its docstring's paragraphs as lines.

    By default the modules in ``MODULES`` and their module-level objects (~540 KB, the
    tests' corpus); ``full``: every importable standard-library module, classes' methods
    included (~1.2 MB, the demo's corpus).
    """
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in UNSAFE) if full \
        else MODULES
    docs = []
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in names:
            try:
                mod = importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - a module missing or failing on this platform is skipped
                continue
            for _, obj in [(name, mod)] + sorted(inspect.getmembers(mod), key=lambda kv: kv[0]):
                if obj is not mod and getattr(obj, "__module__", None) != mod.__name__:
                    continue
                texts = [inspect.getdoc(obj)]
                if full and inspect.isclass(obj):
                    texts += [inspect.getdoc(f) for _, f in sorted(inspect.getmembers(obj), key=lambda kv: kv[0])
                              if getattr(f, "__qualname__", "").startswith(obj.__name__ + ".")]
                for doc in texts:
                    if doc and len(doc) > (200 if full else 300):
                        docs.append([" ".join(p.split()) for p in doc.split("\n\n") if p.strip()])
    return docs + MULTILINGUAL


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


def prepare(out: Path, vocab_size: int = 8000, beam_args: list[str] | None = None, full: bool = False,
            max_seq_length: int = 128) -> int:
    """Corpus, vocabulary and preprocessed dataset under ``out``; the job's exit status."""
    paths = write_corpus(out / "corpus", stdlib_documents(full))
    print(f"corpus: {len(paths)} files in {out / 'corpus'}")

    from preprocess.vocab import train_vocab, write_vocab_txt

    tok, _ = train_vocab([str(p) for p in paths], vocab_size=vocab_size)
    write_vocab_txt(tok, str(out / "vocab.txt"))
    print(f"vocab: {tok.get_vocab_size()} tokens in {out / 'vocab.txt'}")

    from preprocess.job import main as job_main

    return job_main([
        "--input", str(out / "corpus" / "*.txt"), "--output", str(out / "data"), "--vocab", str(out / "vocab.txt"),
        "--max-seq-length", str(max_seq_length), "--max-predictions-per-seq", str(round(max_seq_length * 0.15)),
        "--dupe-factor", "5", "--num-shards", "4", "--validation-fraction", "0.02",
        *(beam_args or []),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = parser("python -m preprocess.example", __doc__.split("\n\n")[0])
    ap.add_argument("--output", default="demo", help="directory for corpus/, vocab.txt and data/")
    ap.add_argument("--vocab-size", type=int, default=8000, help="size of the vocabulary trained on the corpus")
    ap.add_argument("--verbose", action="store_true", help="show third-party libraries' logs and warnings too")
    args, beam_args = ap.parse_known_args(argv)
    from preprocess import logs

    logs.setup(args.verbose)
    beam_args += ["--verbose"] if args.verbose else []
    out = Path(args.output)
    from preprocess.report import main as inspect_main

    return prepare(out, args.vocab_size, beam_args) or inspect_main([str(out / "data"), "--samples", "2"])


if __name__ == "__main__":
    sys.exit(main())
