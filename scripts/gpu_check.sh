#!/usr/bin/env bash
# One command for a single-GPU machine (torch + CUDA, no vLLM, no network, no weights), minutes:
# the CUDA-marked tests, a random Qwen3-shaped 0.6B model at vocabulary 151,936, verl's engine worker
# in bf16 (remove-padding, dynamic batch size, 30,720 tokens per micro-batch, 8k-token responses),
# the proxy's bandwidth; prints one summary table and writes it as JSON (benchmarks/gpu_check.py).
#
#   bash scripts/gpu_check.sh                 # needs CUDA: exits 2 at once without it
#   bash scripts/gpu_check.sh --dry-run       # the same on CPU at a tiny size (CI runs this)
#   bash scripts/gpu_check.sh --output /tmp/gpu_check.json
#
# Env: PYTHON (an interpreter to use; default: set up and use <repo>/.venv with scripts/setup_env.sh),
# OUTPUT (the JSON, default <repo>/gpu_check.json).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTPUT="${OUTPUT:-$REPO/gpu_check.json}"
cd "$REPO"
if [[ -z "${PYTHON:-}" ]]; then
  # shellcheck source=scripts/setup_env.sh
  source "$REPO/scripts/setup_env.sh"
  PYTHON=python
fi

exec "$PYTHON" benchmarks/gpu_check.py --output "$OUTPUT" "$@"
