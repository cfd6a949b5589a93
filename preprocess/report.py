"""``python -m preprocess inspect DIR``: a dataset's statistics and a few decoded rows."""

from __future__ import annotations

import os
import sys

from preprocess.cli import parser
from preprocess.documents import document_source
from preprocess.packing import estimate
from preprocess.reader import DatasetError, PretrainingDataset

LEGEND = ("legend: A and B are the two segments; [CLS] and [SEP] frame them. A masked position shows what the "
          "model sees, a slash and the original: [MASK]/word (replaced by [MASK]), other/word (replaced by a random "
          "token), word/= (left unchanged, still predicted).")


def render_row(row: dict, tokens: list[str], inputs: list[str]) -> str:
    """A row as text, A and B on their own lines; a masked position shows as
    ``shown/label`` (``shown/=`` when the token was left unchanged)."""
    labels = dict(zip(row["masked_lm_positions"].tolist(), row["masked_lm_labels"].tolist()))
    shown = []
    for i, t in enumerate(row["input_ids"].tolist()):
        word = tokens[t]
        if i in labels:
            word = f"{word}/{tokens[labels[i]]}" if word != tokens[labels[i]] else f"{word}/="
        shown.append(word)
    b = int(row["token_type_ids"].argmax())
    a_file, a_off = document_source(row["doc_id_a"])
    b_file, b_off = document_source(row["doc_id_b"])
    nsp = "NotNext (B is random)" if row["next_sentence_label"] else "IsNext (B follows A)"
    return (
        f"  {nsp}; A from {inputs[a_file] if a_file < len(inputs) else a_file}@{a_off}, "
        f"B from {inputs[b_file] if b_file < len(inputs) else b_file}@{b_off}\n"
        f"  A: {' '.join(shown[:b])}\n  B: {' '.join(shown[b:])}\n"
        f"  masked {len(labels)} positions: {sorted(labels)}"
    )


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m preprocess inspect", __doc__)
    p.add_argument("path", help="dataset directory")
    p.add_argument("--split", default="train", help="the split to report on")
    p.add_argument("--samples", type=int, default=3, help="rows to decode and show")
    p.add_argument("--verify", default="size", choices=["none", "size", "checksum"],
                   help="size: shard sizes, schemas and row counts; checksum: also every shard's sha256 and "
                   "every row's checksum and ranges")
    p.add_argument("--global-batch", type=int, default=256,
                   help="sequences packed together in the packing estimate (the trainer packs each global batch)")
    p.add_argument("--max-per-row", type=int, default=3, help="sequences per packed row at most, in the estimate")
    args = p.parse_args(argv)
    try:
        ds = PretrainingDataset(args.path, args.split, verify=args.verify)
        checked = ds.verify_all() if args.verify == "checksum" else 0
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    info = ds.info
    split = info.split(args.split)
    st = split.stats
    print(f"{args.path}: split {args.split}, {split.rows:,} rows, {split.tokens:,} tokens, "
          f"{len(split.shards)} shards (verified: {args.verify}"
          + (f": every shard's sha256 and all {checked:,} rows' checksums and ranges)" if checked else ")"))
    print(f"vocab {os.path.basename(info.vocab_file)} size {info.vocab_size} fingerprint {info.vocab_fingerprint}")
    cfg = info.options
    print(f"max_seq_length {cfg['max_seq_length']}, dupe_factor {cfg['dupe_factor']}, seed {cfg['seed']}, "
          f"masked_lm_prob {cfg['masked_lm_prob']}, max_predictions {cfg['max_predictions_per_seq']}, "
          f"whole_word_mask {cfg['whole_word_mask']}")
    print(f"NotNext fraction {st['next_sentence_random_fraction']}, masked fraction {st['masked_fraction']}, "
          f"split {st['mask_split']}, [UNK] rate {st['unk_rate']}, mean length {st['mean_length']}, "
          f"tokens truncated {st.get('tokens_truncated', 0)}")
    hist = st["length_histogram"]
    step = max(1, len(hist) // 8)
    buckets = [f"{i}-{min(i + step, len(hist)) - 1}:{sum(hist[i:i + step])}" for i in range(0, len(hist), step)]
    print("length histogram: " + " ".join(buckets))
    est = estimate(ds.lengths(), info.max_seq_length, args.global_batch, args.max_per_row, ds.prediction_counts(),
                   info.max_predictions_per_seq)
    print(f"padding: {est['padding_share']:.1%} of the positions of rows padded to {info.max_seq_length}; packed "
          f"(data.packing, global batches of {args.global_batch}, at most {args.max_per_row} per row): "
          f"{est['packed_padding_share']:.1%}, {est['sequences_per_row']:.2f} sequences per row (as many times "
          "fewer rows)")
    print("documents: " + ", ".join(f"{k} {v}" for k, v in info.documents.items()))
    tokens = info.tokens()
    print(LEGEND)
    for i in range(min(args.samples, len(ds))):
        print(f"row {i}:")
        print(render_row(ds[i], tokens, list(info.inputs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
