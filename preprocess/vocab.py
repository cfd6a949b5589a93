"""Train a WordPiece vocabulary from a corpus, the same bytes on every run.

``bert-train-vocab --input 'corpus/*.txt' --output vocab.txt --vocab-size 30522``
(or ``python -m preprocess.vocab``) reads the same formats as the preprocessing job (text,
JSON Lines, Parquet or a MediaWiki XML dump, compressed or not) and writes a BERT ``vocab.txt`` with
[PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, normalised as the job will tokenize
(lower-cased and accent-stripped unless ``--no-lower-case``). ``--tokenizer-json``
also writes the full tokenizer.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterator

from tokenizers import Tokenizer

from preprocess.cli import parser
from preprocess.documents import ReadParams
from preprocess.inputs import FORMATS, read_file
from preprocess.tokenization import SPECIAL_TOKENS, wordpiece_tokenizer
from preprocess.word_counts import count_words
from preprocess.wordpiece import learn_wordpiece


def corpus_lines(files: list[str], params: ReadParams, stats: Counter) -> Iterator[str]:
    """Every line of every document of ``files``, read as the job reads them (bad input counted in ``stats``)."""
    for index, path in enumerate(files):
        for doc in read_file(index, path, params, stats):
            yield from doc.lines


def train_vocab(
    files: list[str],
    vocab_size: int,
    lower_case: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    params: ReadParams | None = None,
    processes: int = 1,
) -> tuple[Tokenizer, Counter]:
    """A trained WordPiece tokenizer and the reader's counts of skipped input; the words are
    counted in ``processes`` processes (the same vocabulary for any number).

    Reproducible byte for byte: the words are counted with the library's own normalizer and
    pre-tokenizer, and the vocabulary learned from the counts by :func:`learn_wordpiece`, the
    library's algorithm with its ties broken by a stable rule (the library's own trainer gives its
    ``##`` pieces ids in a hash map's per-process order, so two runs differ in a few percent of
    entries).
    """
    stats: Counter = Counter()
    counts = count_words(corpus_lines(files, params or ReadParams(), stats), lower_case, processes)
    vocab = learn_wordpiece(counts, vocab_size, min_frequency, limit_alphabet, SPECIAL_TOKENS)
    tok = wordpiece_tokenizer({t: i for i, t in enumerate(vocab)}, lower_case)
    tok.add_special_tokens(list(SPECIAL_TOKENS))  # as the library's trainer leaves them in tokenizer.json
    return tok, stats


def write_vocab_txt(tok: Tokenizer, path: str) -> None:
    from apache_beam.io.filesystems import FileSystems  # here: Beam logs a notice when imported

    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    with FileSystems.create(path) as f:
        f.write(("\n".join(tokens) + "\n").encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = parser("bert-train-vocab", __doc__.split("\n\n")[0])
    p.add_argument("--input", action="append", required=True, dest="inputs", metavar="GLOB",
                   help="corpus file or glob; repeat for more")
    p.add_argument("--output", required=True, help="vocab.txt to write")
    p.add_argument("--vocab-size", type=int, default=30522, help="tokens in the vocabulary, specials included")
    p.add_argument("--min-frequency", type=int, default=2, help="fewest occurrences for a merge")
    p.add_argument("--limit-alphabet", type=int, default=1000,
                   help="most single characters kept, the most frequent (rarer ones become [UNK])")
    p.add_argument("--lower-case", action=argparse.BooleanOptionalAction, default=True,
                   help="lower-case and strip accents (an uncased vocabulary)")
    p.add_argument("--input-format", default="auto", choices=["auto", *FORMATS],
                   help="auto: by extension, as python -m preprocess")
    p.add_argument("--text-field", default="text", help="JSON Lines field or Parquet column holding the text")
    p.add_argument("--tokenizer-json", help="also write the tokenizer as tokenizer.json here")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes counting words; the vocabulary is the same for any number")
    args = p.parse_args(argv)
    from preprocess import logs

    logs.setup()  # before Beam is imported: third parties' notices stay out of the output
    for flag, value, least in (("--vocab-size", args.vocab_size, len(SPECIAL_TOKENS) + 1),
                               ("--min-frequency", args.min_frequency, 0),
                               ("--limit-alphabet", args.limit_alphabet, 1), ("--workers", args.workers, 1)):
        if value < least:
            p.error(f"{flag} {value}: must be at least {least}")

    from preprocess.config import ConfigError
    from preprocess.job import expand_inputs

    try:
        files = expand_inputs(tuple(args.inputs))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    params = ReadParams(input_format=args.input_format, text_field=args.text_field)
    tok, stats = train_vocab(files, args.vocab_size, args.lower_case, args.min_frequency, args.limit_alphabet,
                             params, args.workers)
    write_vocab_txt(tok, args.output)
    if args.tokenizer_json:
        tok.save(args.tokenizer_json)
    skipped = {k: v for k, v in sorted(stats.items()) if k not in ("documents_read", "files", "errors") and v}
    print(f"wrote {tok.get_vocab_size()} tokens to {args.output} from {stats['documents_read']} documents"
          + (f"; counted: {skipped}" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
