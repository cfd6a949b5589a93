"""Evaluation on the validation split: MLM loss and accuracy, NSP accuracy.

The first ``eval.max_sequences`` rows of the split are evaluated, the same rows at any world
size: cut into micro-batches, each rank taking every W-th. Every rank runs the same number of
forward passes (ZeRO-3 gathers parameters in each: a rank short of a micro-batch runs one with
weight 0); sums are reduced over ranks, so the figures are those of the whole evaluated set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from preprocess.reader import PretrainingDataset
from pretrain.data import RowDataset, collator_for, unpacked

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

class Evaluator:
    def __init__(self, data: PretrainingDataset, micro_batch: int, max_sequences: int, rank: int, world: int,
                 pin_memory: bool = False):
        """``data``: the evaluated split; rank ``rank`` of ``world`` reads every ``world``-th micro-batch."""
        n = min(len(data), max_sequences)
        every = [list(range(s, min(s + micro_batch, n))) for s in range(0, n, micro_batch)]
        mine = every[rank::world]
        each = -(-len(every) // world)  # micro-batches per rank
        self.weights = [1.0] * len(mine) + [0.0] * (each - len(mine))
        mine += every[:1] * (each - len(mine))
        data.rows([i for b in mine for i in b])  # verified before the first evaluation, not during it
        self.loader = DataLoader(
            RowDataset(data), batch_sampler=[unpacked(b) for b in mine],
            collate_fn=collator_for(data), pin_memory=pin_memory,
        )

    @torch.no_grad()
    def run(self, engine: DeepSpeedEngine) -> dict[str, float]:
        """Evaluate ``engine``'s model; sums stay on its device and are read once."""
        engine.eval()
        sums = torch.zeros(5, dtype=torch.float64, device=engine.device)  # mlm loss x n, mlm ok, mlm n, nsp ok, nsp n
        for weight, batch in zip(self.weights, self.loader, strict=True):
            batch = {k: (v.to(engine.device, non_blocking=True) if v is not None else None)
                     for k, v in batch["inputs"].items()}
            out = engine(**batch)
            sums += weight * torch.stack([out.mlm_loss_sum.double(), out.mlm_correct.double(), out.mlm_total.double(),
                                          out.nsp_correct.double(), out.nsp_total.double()])
        dist.all_reduce(sums)
        engine.train()
        loss, mlm_ok, mlm_n, nsp_ok, nsp_n = sums.tolist()
        return {
            "eval_mlm_loss": loss / max(1.0, mlm_n),
            "eval_mlm_accuracy": mlm_ok / max(1.0, mlm_n),
            "eval_nsp_accuracy": nsp_ok / max(1.0, nsp_n),
        }
