"""Model speed and memory, ours against transformers' BertForPreTraining, in one run.

    python -m bench.model_speed                   # CPU: mini and base, seq 128, checkpointing memory
    python -m bench.model_speed --gpu [--peak-tflops 989]   # GPU: BERT-Large seq 128 and 512, bf16

CPU (2 threads): fwd + bwd + AdamW step at seq 128 with 20 masked positions per sequence,
identical config, weights, batch and masks for both models; steps alternate between the two
so that drift in the machine hits both alike. Memory: bytes of tensors saved for backward
(the activation memory) for base at seq 512, with and without checkpointing every layer.

GPU: sequences/s, tokens/s, achieved TFLOP/s and model FLOPs utilisation, counting
``pretrain.model.flops_per_token`` (3 x forward matmul FLOPs: 24 H^2 + 4 S H per layer and
token with I = 4H, plus the MLM head on the masked rows) against ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import time

import torch

from pretrain.model import (
    BertConfig,
    BertForPreTraining,
    flops_per_token,
    set_activation_checkpointing,
)

VOCAB = 30522


def make_batch(b: int, s: int, p: int, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, VOCAB, (b, s), generator=g)
    types = (torch.arange(s) >= s // 2).long().expand(b, s).clone()
    positions = torch.stack([torch.randperm(s - 2, generator=g)[:p] + 1 for _ in range(b)])
    labels = torch.gather(ids, 1, positions)
    nsp = torch.randint(0, 2, (b,), generator=g)
    dense = torch.full_like(ids, -100).scatter_(1, positions, labels)
    to = lambda *t: [x.to(device) for x in t]  # noqa: E731
    return to(ids, types, positions, labels, nsp, dense)


def pair(size: str, device="cpu"):
    import transformers

    c = BertConfig.named(size, vocab_size=VOCAB)
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(
        transformers.BertConfig(**{k: v for k, v in c.to_hf_dict().items() if k != "architectures"},
                                attn_implementation="sdpa")
    ).to(device)
    ours = BertForPreTraining(c).to(device)
    ours.load_state_dict(hf.state_dict(), strict=True)
    return c, ours, hf


def cpu_speed(size: str, batch: int, steps: int) -> tuple[float, float]:
    torch.set_num_threads(2)
    _, ours, hf = pair(size)
    ids, types, positions, labels, nsp, dense = make_batch(batch, 128, 20)
    mask = torch.ones_like(ids)
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_h = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def step_ours():
        ours(ids, types, None, positions, labels, nsp).loss.backward()  # no padding: no mask
        opt_o.step()
        opt_o.zero_grad(set_to_none=True)

    def step_hf():
        hf(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=dense, next_sentence_label=nsp).loss.backward()
        opt_h.step()
        opt_h.zero_grad(set_to_none=True)

    times = {"ours": 0.0, "hf": 0.0}
    for i in range(steps + 2):
        for name, fn in (("ours", step_ours), ("hf", step_hf)) if i % 2 else (("hf", step_hf), ("ours", step_ours)):
            t = time.perf_counter()
            fn()
            if i >= 2:  # two warm-up rounds
                times[name] += time.perf_counter() - t
    return batch * steps / times["ours"], batch * steps / times["hf"]


def activation_bytes(size: str, seq: int, batch: int, every: int) -> int:
    torch.set_num_threads(2)
    model = BertForPreTraining(BertConfig.named(size, vocab_size=VOCAB))
    set_activation_checkpointing(model, every)
    ids, types, positions, labels, nsp, _ = make_batch(batch, seq, 80)
    total = 0

    def pack(t):
        nonlocal total
        if not isinstance(t, torch.nn.Parameter) and t.data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    params = {p.data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, types, None, positions, labels, nsp).loss.backward()
    return total


def gpu_speed(seq: int, batch: int, predictions: int, steps: int, peak: float, compare_hf: bool) -> None:
    device = "cuda"
    c, ours, hf = pair("large", device)
    ids, types, positions, labels, nsp, dense = make_batch(batch, seq, predictions, device)
    runs = [("ours", ours, lambda m: m(ids, types, None, positions, labels, nsp).loss)]
    if compare_hf:
        runs.append(("transformers", hf, lambda m: m(input_ids=ids, token_type_ids=types, labels=dense,
                                                      next_sentence_label=nsp).loss))
    fpt = flops_per_token(c, seq, predictions)
    for name, model, loss_of in runs:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        for i in range(steps + 3):
            if i == 3:
                torch.cuda.synchronize()
                t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_of(model)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        seqs = batch * steps / dt
        tflops = seqs * seq * fpt / 1e12
        print(f"{name:13s} large seq {seq:4d} batch {batch:3d}: {seqs:8.1f} seq/s {seqs * seq:10.0f} tok/s "
              f"{tflops:7.1f} TFLOP/s  MFU {tflops / peak:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989, A100: 312)")
    ap.add_argument("--steps", type=int, default=0)
    args = ap.parse_args()
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device")
        print(f"{torch.cuda.get_device_name()}; FLOPs/token = 3 x (L (24 H^2 + 4 S H) + mask share x (2 H^2 + 2 H V))")
        for seq, batch, preds in ((128, 128, 20), (512, 32, 80)):
            gpu_speed(seq, batch, preds, args.steps or 20, args.peak_tflops, compare_hf=True)
        return
    print("CPU, 2 threads, fp32, seq 128, 20 masked positions, fwd + bwd + AdamW")
    for size, batch, steps in (("mini", 32, args.steps or 10), ("base", 8, args.steps or 8)):
        ours, hf = cpu_speed(size, batch, steps)
        print(f"{size:5s} batch {batch:2d}: ours {ours:6.1f} seq/s, transformers {hf:6.1f} seq/s, ratio {ours / hf:.2f}x")
    plain = activation_bytes("base", 512, 2, 0)
    ckpt = activation_bytes("base", 512, 2, 1)
    print(f"activation memory, base, seq 512, batch 2: {plain / 2**20:.0f} MiB without checkpointing, "
          f"{ckpt / 2**20:.0f} MiB with (every layer): {plain / ckpt:.1f}x less")


if __name__ == "__main__":
    main()
