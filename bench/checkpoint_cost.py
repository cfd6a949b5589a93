"""Cost of a checkpoint: BERT-Large with LAMB at ZeRO-1, world size 1, local disk.

    python -m bench.checkpoint_cost [--size large] [--precision bf16] [--dir DIR]

Builds the trainer's own engine (``pretrain.engine.build_engine``: LAMB, ZeRO-1, the
recipe's precision) on CPU, takes one optimizer step on a random batch so that LAMB's
moments exist, then times, through ``pretrain.checkpoint.CheckpointManager`` as the
trainer calls it: ``save`` (DeepSpeed's save, then our file list with sizes and CRC-32)
and ``find`` + ``load`` (our checks, then DeepSpeed's load). Prints the checkpoint's size,
both times, and the CRC-32 share of each (timed separately on the same files).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="large")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--dir", type=Path, help="where to write (default: a temporary directory on local disk)")
    args = ap.parse_args()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29517"), RANK="0",
                      WORLD_SIZE="1", LOCAL_RANK="0")

    from pretrain.checkpoint import CheckpointManager, Shape, crc32_of, files_of
    from pretrain.config import load_config
    from pretrain.distributed import World, init_distributed
    from pretrain.engine import build_engine
    from pretrain.model import build_model
    from pretrain.model_config import BertConfig

    cfg = load_config("configs/bert-large-phase1.yaml", [
        f"model.size={args.size}", "optim.name=lamb", "deepspeed.zero_stage=1",
        f"deepspeed.precision={args.precision}", "deepspeed.global_batch_size=1", "data.micro_batch_size=1"])
    init_distributed(World(rank=0, local_rank=0, size=1), 30)
    model = build_model(BertConfig.named(args.size, vocab_size=30522))
    params = sum(p.numel() for p in model.parameters())
    engine = build_engine(cfg, model, world_size=1)
    seq = 128
    batch = {"input_ids": torch.randint(5, 30000, (1, seq)), "token_type_ids": torch.zeros(1, seq, dtype=torch.long),
             "attention_mask": torch.ones(1, seq, dtype=torch.long),
             "masked_lm_positions": torch.arange(1, 21).unsqueeze(0), "masked_lm_labels": torch.randint(5, 30000, (1, 20)),
             "next_sentence_label": torch.tensor([1])}
    out = engine(**batch)
    engine.backward(out.loss)
    engine.step()

    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-checkpoint-")) / "checkpoints"
    manager = CheckpointManager(root, keep_last=1, rank=0, shape=Shape(1, 1))
    t = time.perf_counter()
    path = manager.save(engine, {"step": 1, "samples": 1})
    save_s = time.perf_counter() - t
    files = files_of(path)
    size = sum((path / f).stat().st_size for f in files)
    t = time.perf_counter()
    for f in files:
        crc32_of(path / f)
    crc_s = time.perf_counter() - t
    t = time.perf_counter()
    resume = manager.find()
    state = manager.load(engine, resume) if resume else None
    load_s = time.perf_counter() - t
    assert state is not None and state["step"] == 1
    result = {"size": args.size, "parameters": params, "precision": args.precision, "files": len(files),
              "bytes": size, "save_s": round(save_s, 2), "load_s": round(load_s, 2), "crc32_s": round(crc_s, 2),
              "threads": torch.get_num_threads()}
    print(f"BERT-{args.size} ({params / 1e6:.0f} M parameters), LAMB, ZeRO-1, {args.precision}, world size 1, "
          f"{torch.get_num_threads()} CPU threads, local disk")
    print(f"checkpoint: {len(files)} files, {size / 1e9:.2f} GB")
    print(f"save {save_s:.2f} s (of which CRC-32 ~{crc_s:.2f} s), load {load_s:.2f} s (checks ~{crc_s:.2f} s)")
    print(json.dumps(result))
    if not args.dir:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
