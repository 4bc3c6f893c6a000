#!/usr/bin/env bash
# GPU smoke test: a few Lp-Reg GRPO steps on one GPU with verl's own stack (vLLM rollout, FSDP2,
# bf16) and a small real model, on a DAPO-Math-17k subset with MATH-500 validation. Run it to
# check a set-up before a 64-GPU recipe; it uses the same entry point, reward and prompt.
#
#   MODEL_PATH=/models/Qwen2.5-0.5B bash examples/quickstart/run_gpu_smoke.sh
#
# Data: DATA_DIR (default $HOME/data/lp_reg) holds what `python -m verl_lpreg.data_prep all` writes; when
# dapo_math_17k.parquet / math500.parquet are missing they are built there from the Hub
# (data_prep, needs hub access). Only TRAIN_SAMPLES / VAL_SAMPLES rows are used.
# Needs the `gpu` extra (pip install -e ".[gpu]": verl[vllm]). Extra arguments go to main_ppo
# as hydra overrides. Env: MODEL_PATH (required), STEPS (5), OUT_DIR (./outputs/quickstart_gpu),
# PYTHON (python3), LOSS_MODE (lp_reg), BATCH (32 prompts), N (8), TRAIN_SAMPLES (1024),
# VAL_SAMPLES (64), MAX_RESPONSE (1024 tokens), GPU_MEM (0.5, vLLM's share of the GPU).
set -euo pipefail

: "${MODEL_PATH:?set MODEL_PATH to a small HF model directory, e.g. Qwen2.5-0.5B or Qwen3-0.6B-Base}"
STEPS="${STEPS:-5}"
OUT_DIR="${OUT_DIR:-./outputs/quickstart_gpu}"
PYTHON="${PYTHON:-python3}"
LOSS_MODE="${LOSS_MODE:-lp_reg}"
BATCH="${BATCH:-32}"
N="${N:-8}"
TRAIN_SAMPLES="${TRAIN_SAMPLES:-1024}"
VAL_SAMPLES="${VAL_SAMPLES:-64}"
MAX_RESPONSE="${MAX_RESPONSE:-1024}"
GPU_MEM="${GPU_MEM:-0.5}"
DATA_DIR="${DATA_DIR:-$HOME/data/lp_reg}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
CKPT_DIR="$OUT_DIR/checkpoints"
METRICS="$OUT_DIR/metrics.jsonl"
LOG="$OUT_DIR/train.log"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "[error] no CUDA GPU visible; use examples/quickstart/run_cpu.sh" >&2
  exit 2
fi
if ! "$PYTHON" -c "import vllm" 2>/dev/null; then
  echo "[error] vllm is not installed (pip install -e '.[gpu]')" >&2
  exit 2
fi

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
export HYDRA_FULL_ERROR=1
export RAY_USAGE_STATS_ENABLED=0

ARGS=(
  algorithm.adv_estimator=grpo
  data.train_files="$DATA_DIR/dapo_math_17k.parquet"
  data.val_files="$DATA_DIR/math500.parquet"
  data.train_max_samples="$TRAIN_SAMPLES"
  data.val_max_samples="$VAL_SAMPLES"
  data.train_batch_size="$BATCH"
  data.max_prompt_length=1024
  data.max_response_length="$MAX_RESPONSE"
  data.truncation=left
  actor_rollout_ref.model.path="$MODEL_PATH"
  actor_rollout_ref.model.use_remove_padding=true
  actor_rollout_ref.model.enable_gradient_checkpointing=true
  actor_rollout_ref.actor.strategy=fsdp2
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.optim.weight_decay=0
  actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH"
  actor_rollout_ref.actor.use_dynamic_bsz=true
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384
  actor_rollout_ref.actor.clip_ratio_low=1.0
  actor_rollout_ref.actor.clip_ratio_high=9.0
  actor_rollout_ref.actor.use_kl_loss=false
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.policy_loss.loss_mode="$LOSS_MODE"
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.n="$N"
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.tensor_model_parallel_size=1
  actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEM"
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=16384
  actor_rollout_ref.rollout.val_kwargs.temperature=0
  actor_rollout_ref.rollout.val_kwargs.n=1
  trainer.nnodes=1
  trainer.n_gpus_per_node=1
  trainer.experiment_name=gpu_smoke_"$LOSS_MODE"
  trainer.test_freq="$STEPS"
  trainer.save_freq="$STEPS"
  trainer.max_actor_ckpt_to_keep=1
  +ray_kwargs.ray_init.include_dashboard=false
)
lpreg_quickstart_check "${ARGS[@]}" "$@"

t0=$(date +%s)
for dataset in dapo-math-17k math500; do
  file="$DATA_DIR/${dataset//-/_}.parquet"
  if [[ ! -f "$file" ]]; then
    echo "[data] $file missing: building it with data_prep"
    (cd "$REPO" && "$PYTHON" -m verl_lpreg.data_prep "$dataset" --output "$file")
  fi
done
if [[ -f "$CKPT_DIR/latest_checkpointed_iteration.txt" ]]; then
  echo "[resume] from $CKPT_DIR"
fi
t_prep=$(date +%s)

echo "Lp-Reg GRPO with verl main_ppo on one GPU (vLLM): $STEPS steps of $BATCH x $N; full log: $LOG"

lpreg_quickstart_train "${ARGS[@]}" "$@"
