#!/usr/bin/env bash
# The distillation engine on a GPU, in one go (< 8 minutes on one H100/H200-class GPU):
#   1. the CUDA subset of the tests (tests/test_distill_devices.py: fp32 with no bf16 and no TF32,
#      bf16 autocast, fused AdamW, SDPA and attention-map paths, the sparse teacher forward, NCCL DDP
#      at world size 1, resume, a short distillation that learns);
#   2. a short distillation of a tiny teacher on CUDA (KD on, its MLM head trained first);
#   3. the paper-shape benchmark (BERT-base teacher -> general-e128, batch 48, bf16): tokens/s, MFU
#      against the measured matmul peak, ratio to the fp32 reference recipe.
# It writes benchmarks/results/gpu_check.md. Needs only torch, transformers, safetensors, tokenizers
# and tqdm (a stock CUDA PyTorch image; pytest is used when installed), no network, no packaged
# teacher. Without a CUDA device it says so and exits with status 2.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=python3 by default
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="src:tests${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
