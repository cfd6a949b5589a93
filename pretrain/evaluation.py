"""Evaluation on the validation split: MLM loss and accuracy, NSP accuracy.

Rows are read in order, each rank taking every W-th micro-batch, up to
``eval.max_batches`` per rank; sums are reduced over ranks, so the figures are
those of the whole evaluated set.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from preprocess.reader import PretrainingDataset
from pretrain.data import RowDataset, collator_for


class Evaluator:
    def __init__(self, data: PretrainingDataset, micro_batch: int, max_batches: int, rank: int, world: int):
        total = min(len(data) // micro_batch, max_batches * world)
        batches = [list(range(b * micro_batch, (b + 1) * micro_batch)) for b in range(rank, total, world)]
        self.loader = DataLoader(
            RowDataset(data), batch_sampler=batches,
            collate_fn=collator_for(data),
        )

    @torch.no_grad()
    def run(self, engine) -> dict[str, float]:
        engine.eval()
        sums = torch.zeros(5, dtype=torch.float64)  # mlm loss x n, mlm ok, mlm n, nsp ok, nsp n
        for batch in self.loader:
            batch.pop("real_tokens")
            batch = {k: (v.to(engine.device) if v is not None else None) for k, v in batch.items()}
            out = engine(**batch)
            n = out.mlm_total.item()
            sums += torch.tensor([out.mlm_loss.item() * n, out.mlm_correct.item(), n, out.nsp_correct.item(),
                                  out.nsp_total.item()], dtype=torch.float64)
        dist.all_reduce(sums)
        engine.train()
        return {
            "eval_mlm_loss": sums[0].item() / max(1.0, sums[2].item()),
            "eval_mlm_accuracy": sums[1].item() / max(1.0, sums[2].item()),
            "eval_nsp_accuracy": sums[3].item() / max(1.0, sums[4].item()),
        }
