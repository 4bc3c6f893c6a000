#!/usr/bin/env bash
# Lp-Reg quick-start on a CPU-only machine (2 cores are enough; ~3 minutes with the defaults).
#
#   bash examples/quickstart/run_cpu.sh                 # STEPS=20, OUT_DIR=./outputs/quickstart
#   STEPS=3 OUT_DIR=/tmp/qs bash examples/quickstart/run_cpu.sh
#
# 1. builds a tiny random Qwen2 model + byte-level BPE tokenizer (verl_lpreg.testing.tiny_model, offline);
# 2. writes a synthetic arithmetic task in verl's parquet layout (answers in \boxed{});
# 3. warms the model up with a short supervised pass (plain PyTorch) so that sampled answers are
#    right only some of the time -- a random model scores 0 everywhere and GRPO learns nothing;
# 4. runs Lp-Reg GRPO through verl 0.9.1's real main_ppo loop (v1 trainer, TransferQueue, agent
#    loop, reward loop, FSDP2 engine) on CPU, with validation and a checkpoint, logging with
#    verl's file logger to $OUT_DIR/metrics.jsonl; one progress line per step, a summary at the end.
#
# The composed trainer config (with the extra arguments) is checked first, before anything is built.
# Running it again with the same OUT_DIR and a larger STEPS resumes from the last checkpoint;
# metrics.jsonl stays the one history of the run (python -m verl_lpreg.plot draws it as one run).
# Ctrl-C stops the training and says where the last checkpoint is; killing this script takes the
# training with it. Extra arguments are passed to main_ppo as hydra overrides.
#
# Env: STEPS (20), OUT_DIR (./outputs/quickstart), PYTHON (default: .venv's, set up on first use), LOSS_MODE (lp_reg; vanilla =
# plain GRPO), LR (5e-4), BATCH (32 prompts/step), N (8 samples/prompt), MICRO_BATCH (32 sequences),
# WARMUP_STEPS (300), TEST_FREQ (5), SAVE_FREQ (10), NEG_FRACTION (0.02, rho), SEED (0), RMPAD (false),
# FROM_RUN (the OUT_DIR of an earlier run: start from its warmed-up model and data, linked, instead of
# building and warming up new ones; the same SEED and WARMUP_STEPS give the same model anyway).
# rho is 0.02 rather than the paper's 0.01 because the reference takes the rho-quantile per
# micro-batch and applies Lp-Reg only when k = int(rho * n_negative_tokens) > 1: a 32-sequence
# micro-batch of this task has ~400 negative tokens.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# Set-up on a fresh machine: create or reuse <repo>/.venv with everything installed
# (scripts/setup_env.sh, idempotent). Skipped when PYTHON names an interpreter to use.
if [[ -z "${PYTHON:-}" ]]; then
  # shellcheck source-path=SCRIPTDIR source=../../scripts/setup_env.sh
  source "$REPO/scripts/setup_env.sh"
  PYTHON=python
fi

STEPS="${STEPS:-20}"
OUT_DIR="${OUT_DIR:-./outputs/quickstart}"
LOSS_MODE="${LOSS_MODE:-lp_reg}"
LR="${LR:-5e-4}"
BATCH="${BATCH:-32}"
N="${N:-8}"
WARMUP_STEPS="${WARMUP_STEPS:-300}"
TEST_FREQ="${TEST_FREQ:-5}"
SAVE_FREQ="${SAVE_FREQ:-10}"
NEG_FRACTION="${NEG_FRACTION:-0.02}"
SEED="${SEED:-0}"
# verl's remove-padding packs a micro-batch into one row; with eager attention on CPU that costs
# (tokens in the micro-batch)^2, so padded rows are ~2x faster here. RMPAD=true = the GPU path.
RMPAD="${RMPAD:-false}"

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
MODEL_DIR="$OUT_DIR/model"
DATA_DIR="$OUT_DIR/data"
CKPT_DIR="$OUT_DIR/checkpoints"
METRICS="$OUT_DIR/metrics.jsonl"
LOG="$OUT_DIR/train.log"

# Ray workers must import verl_lpreg even when the package is not pip-installed.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# Loaded by verl/__init__.py in the driver and in every Ray worker: CPU platform + "hf" rollout.
export VERL_USE_EXTERNAL_MODULES="verl_lpreg.cpu${VERL_USE_EXTERNAL_MODULES:+,$VERL_USE_EXTERNAL_MODULES}"
export VERL_PLATFORM=cpu
export TOKENIZERS_PARALLELISM=false
export HYDRA_FULL_ERROR=1
export RAY_DEDUP_LOGS=0
export RAY_USAGE_STATS_ENABLED=0
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # everything is local; never wait on a hub

t0=$(date +%s)
resume_step=""
if [[ -f "$CKPT_DIR/latest_checkpointed_iteration.txt" ]]; then
  resume_step="$(cat "$CKPT_DIR/latest_checkpointed_iteration.txt")"
fi

# What verl needs on a CPU (platform, engine, rollout, Ray), shared with verl_lpreg.cpu.CPU_OVERRIDES.
mapfile -t CPU_ARGS < <(grep -v -e '^#' -e '^[[:space:]]*$' "$REPO/verl_lpreg/cpu/overrides.txt")
ARGS=(
  algorithm.adv_estimator=grpo
  data.train_files="$DATA_DIR/train.parquet"
  data.val_files="$DATA_DIR/val.parquet"
  data.train_batch_size="$BATCH"
  data.max_prompt_length=64
  data.max_response_length=32
  data.dataloader_num_workers=0
  data.seed="$SEED"
  actor_rollout_ref.model.path="$MODEL_DIR"
  actor_rollout_ref.model.custom_chat_template=null
  actor_rollout_ref.model.use_remove_padding="$RMPAD"
  actor_rollout_ref.actor.optim.lr="$LR"
  actor_rollout_ref.actor.optim.weight_decay=0
  actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH"
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="${MICRO_BATCH:-32}"
  actor_rollout_ref.actor.use_kl_loss=false
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.policy_loss.loss_mode="$LOSS_MODE"
  actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction="$NEG_FRACTION"
  actor_rollout_ref.rollout.n="$N"
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.seed="$SEED"
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="${MICRO_BATCH:-32}"
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu="${MICRO_BATCH:-32}"  # used only with a KL loss
  "${CPU_ARGS[@]}"
  +ray_kwargs.ray_init.address=local  # always a fresh local cluster, never a running one
  reward.num_workers=1
  # run
  trainer.experiment_name=cpu_"$LOSS_MODE"
  trainer.test_freq="$TEST_FREQ"
  trainer.save_freq="$SAVE_FREQ"
  trainer.max_actor_ckpt_to_keep=2
)

echo "[0/4] checking the trainer config"
lpreg_quickstart_check "${ARGS[@]}" "$@"

trap 'echo; echo "[interrupted] during the preparation; run the same command again to start over" >&2; exit 130' INT TERM HUP
if [[ -n "$resume_step" ]]; then
  echo "[1-3/4] resuming from $CKPT_DIR/global_step_$resume_step (model and data kept)"
elif [[ -n "${FROM_RUN:-}" ]]; then
  [[ -f "$FROM_RUN/model/model.safetensors" && -f "$FROM_RUN/data/train.parquet" ]] ||
    { echo "FROM_RUN=$FROM_RUN holds no warmed-up model/ and data/ of a quick-start run" >&2; exit 2; }
  echo "[1-3/4] model and data of $FROM_RUN"
  ln -sfn "$(cd "$FROM_RUN/model" && pwd)" "$MODEL_DIR"
  ln -sfn "$(cd "$FROM_RUN/data" && pwd)" "$DATA_DIR"
else
  echo "[1/4] tiny model + tokenizer -> $MODEL_DIR"
  PYTHONWARNINGS=ignore "$PYTHON" -c "from verl_lpreg.testing.tiny_model import build_tiny_model as b; print('[model]', b('$MODEL_DIR', seed=$SEED))" \
    2>"$OUT_DIR/build_model.log" || { cat "$OUT_DIR/build_model.log" >&2; exit 1; }
  echo "[2/4] synthetic arithmetic task -> $DATA_DIR"
  "$PYTHON" "$HERE/make_data.py" --out_dir "$DATA_DIR" --seed "$SEED"
  echo "[3/4] supervised warm-up ($WARMUP_STEPS steps)"
  "$PYTHON" "$HERE/warmup_sft.py" --model "$MODEL_DIR" --data "$DATA_DIR/sft.jsonl" --steps "$WARMUP_STEPS" \
    --seed "$SEED" 2>&1 | grep -v -e "Loading weights" -e "Writing model shards" -e "torch_dtype" || true
  [[ -f "$MODEL_DIR/model.safetensors" ]] || { echo "warm-up failed" >&2; exit 1; }
fi
trap - INT TERM HUP
t_prep=$(date +%s)

echo "[4/4] Lp-Reg GRPO with verl main_ppo on CPU: $STEPS steps (loss_mode=$LOSS_MODE); full log: $LOG"
lpreg_quickstart_train "${ARGS[@]}" "$@"
