#!/usr/bin/env bash
# Make, on a machine with the package index, what bench/gpu_check.sh needs on a GPU machine without
# one (Python 3.12, CUDA torch, transformers, pyarrow, tokenizers, numpy, pytest; no DeepSpeed, pydantic,
# hjson, Beam, wandb):
#   .wheels/     wheels of what that image lacks: DeepSpeed built from its source without compiled ops
#                (DS_BUILD_OPS=0: the trainer uses torch's fused AdamW and our LAMB), its dependencies
#                and pydantic, for Python 3.12 on x86_64 Linux (GPU_PYTHON=3.11 etc. for another);
#   .gpu-data/   small datasets (the built-in example corpus, seq 128 and 512) made by the preprocess job.
# Carry both with the checkout (about 10 MB together), then run bench/gpu_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${GPU_PYTHON:-3.12}
# every version from constraints.txt (what the suite passed with); the GPU image's torch is kept
grep -v -E '^torch==' constraints.txt > .wheels.constraints
trap 'rm -f .wheels.constraints' EXIT
mkdir -p .wheels
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-binary deepspeed -c .wheels.constraints deepspeed -w .wheels
python3 -m pip download -q --only-binary=:all: --python-version "$py" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .wheels -c .wheels.constraints \
    pydantic hjson msgpack ninja py-cpuinfo einops psutil
rm -rf .gpu-data
python3 -m preprocess.example --output .gpu-data --vocab-size 8000 \
    --direct_running_mode=in_memory --direct_num_workers=1 >/dev/null
# the same corpus at seq 512 (short documents: much padding, what packing is for)
python3 -m preprocess --input '.gpu-data/corpus/*.txt' --output .gpu-data/data512 --vocab .gpu-data/vocab.txt \
    --max-seq-length 512 --max-predictions-per-seq 80 --dupe-factor 5 --num-shards 2 >/dev/null
rm -rf .gpu-data/corpus
du -sh .wheels .gpu-data
