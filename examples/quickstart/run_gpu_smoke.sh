#!/usr/bin/env bash
# GPU smoke test of the quick-start: the same tiny model, task and Lp-Reg GRPO loop as
# run_cpu.sh, but on one NVIDIA GPU with verl's own stack (vLLM rollout, FSDP2 in bf16 mixed
# precision) and none of verl_lpreg.cpu. Needs the `gpu` extra (verl[vllm]); a few minutes.
#
#   bash examples/quickstart/run_gpu_smoke.sh            # STEPS=5, OUT_DIR=./outputs/quickstart_gpu
#
# The tiny model is built with head_dim 64 (hidden 128, 2 heads): vLLM's attention kernels
# do not take the CPU default's head_dim 16. Extra arguments go to main_ppo as hydra overrides.
# Env: STEPS (5), OUT_DIR, PYTHON (python3), LOSS_MODE (lp_reg), LR (5e-4), BATCH (32), N (8),
# WARMUP_STEPS (300), NEG_FRACTION (0.02), SEED (0), GPU_MEM (0.3, vLLM's share of the GPU).
set -euo pipefail

STEPS="${STEPS:-5}"
OUT_DIR="${OUT_DIR:-./outputs/quickstart_gpu}"
PYTHON="${PYTHON:-python3}"
LOSS_MODE="${LOSS_MODE:-lp_reg}"
LR="${LR:-5e-4}"
BATCH="${BATCH:-32}"
N="${N:-8}"
WARMUP_STEPS="${WARMUP_STEPS:-300}"
NEG_FRACTION="${NEG_FRACTION:-0.02}"
SEED="${SEED:-0}"
GPU_MEM="${GPU_MEM:-0.3}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
MODEL_DIR="$OUT_DIR/model"
DATA_DIR="$OUT_DIR/data"
CKPT_DIR="$OUT_DIR/checkpoints"
METRICS="$OUT_DIR/metrics.jsonl"
LOG="$OUT_DIR/train.log"

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "[error] no CUDA GPU visible; use examples/quickstart/run_cpu.sh" >&2
  exit 2
fi
if ! "$PYTHON" -c "import vllm" 2>/dev/null; then
  echo "[error] vllm is not installed (pip install 'verl-lpreg[gpu]')" >&2
  exit 2
fi

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export VERL_FILE_LOGGER_PATH="$METRICS"
export TOKENIZERS_PARALLELISM=false
export HYDRA_FULL_ERROR=1
export RAY_USAGE_STATS_ENABLED=0
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # everything is local; never wait on a hub

t0=$(date +%s)
if [[ ! -f "$CKPT_DIR/latest_checkpointed_iteration.txt" ]]; then
  echo "[1/4] tiny model (head_dim 64) + tokenizer -> $MODEL_DIR"
  PYTHONWARNINGS=ignore "$PYTHON" -c "from verl_lpreg.tiny_model import build_tiny_model as b; \
print('[model]', b('$MODEL_DIR', seed=$SEED, hidden_size=128, num_attention_heads=2, num_key_value_heads=1))" \
    2>"$OUT_DIR/build_model.log" || { cat "$OUT_DIR/build_model.log" >&2; exit 1; }
  echo "[2/4] synthetic arithmetic task -> $DATA_DIR"
  "$PYTHON" "$HERE/make_data.py" --out_dir "$DATA_DIR" --seed "$SEED"
  echo "[3/4] supervised warm-up ($WARMUP_STEPS steps, CPU)"
  CUDA_VISIBLE_DEVICES="" "$PYTHON" "$HERE/warmup_sft.py" --model "$MODEL_DIR" --data "$DATA_DIR/sft.jsonl" \
    --steps "$WARMUP_STEPS" --seed "$SEED" 2>&1 | grep -v -e "Loading weights" -e "Writing model shards" -e "torch_dtype" || true
else
  echo "[1-3/4] resuming from $CKPT_DIR (model and data kept)"
  if [[ -f "$METRICS" ]]; then mv "$METRICS" "$OUT_DIR/metrics.until_step$(cat "$CKPT_DIR/latest_checkpointed_iteration.txt").jsonl"; fi
fi
t_prep=$(date +%s)

echo "[4/4] Lp-Reg GRPO with verl main_ppo on GPU (vLLM rollout): $STEPS steps; full log: $LOG"
ARGS=(
  algorithm.adv_estimator=grpo
  data.train_files="$DATA_DIR/train.parquet"
  data.val_files="$DATA_DIR/val.parquet"
  data.train_batch_size="$BATCH"
  data.max_prompt_length=64
  data.max_response_length=32
  data.seed="$SEED"
  actor_rollout_ref.model.path="$MODEL_DIR"
  actor_rollout_ref.model.custom_chat_template=null
  +actor_rollout_ref.model.override_config.attn_implementation=sdpa
  actor_rollout_ref.actor.optim.lr="$LR"
  actor_rollout_ref.actor.optim.weight_decay=0
  actor_rollout_ref.actor.ppo_mini_batch_size="$BATCH"
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64
  actor_rollout_ref.actor.use_kl_loss=false
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.strategy=fsdp2
  actor_rollout_ref.actor.use_torch_compile=false
  actor_rollout_ref.actor.fsdp_config.use_torch_compile=false
  actor_rollout_ref.actor.policy_loss.loss_mode="$LOSS_MODE"
  actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction="$NEG_FRACTION"
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.n="$N"
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.seed="$SEED"
  actor_rollout_ref.rollout.tensor_model_parallel_size=1
  actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEM"
  actor_rollout_ref.rollout.enforce_eager=true
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64
  actor_rollout_ref.rollout.agent.num_workers=2
  reward.num_workers=2
  trainer.nnodes=1
  trainer.n_gpus_per_node=1
  trainer.logger="[console,file]"
  trainer.project_name=verl_lpreg_quickstart
  trainer.experiment_name=gpu_smoke_"$LOSS_MODE"
  trainer.total_training_steps="$STEPS"
  trainer.test_freq="$STEPS"
  trainer.save_freq="$STEPS"
  trainer.val_before_train=true
  trainer.default_local_dir="$CKPT_DIR"
  trainer.resume_mode=auto
  trainer.max_actor_ckpt_to_keep=1
  +ray_kwargs.ray_init.include_dashboard=false
)

rm -f "$METRICS" "$OUT_DIR/.first_metrics"
"$PYTHON" -m verl_lpreg.main_ppo "${ARGS[@]}" "$@" >"$LOG" 2>&1 &
TRAIN_PID=$!
trap 'kill "$TRAIN_PID" 2>/dev/null || true' INT TERM
"$PYTHON" "$HERE/progress.py" follow --metrics "$METRICS" --pid "$TRAIN_PID" --steps "$STEPS" \
  --mark "$OUT_DIR/.first_metrics" || true
rc=0
wait "$TRAIN_PID" || rc=$?
t_end=$(date +%s)
if [[ $rc -ne 0 ]]; then
  echo "[error] training failed (exit $rc); last lines of $LOG:" >&2
  tail -40 "$LOG" >&2
  exit "$rc"
fi
"$PYTHON" "$HERE/progress.py" summary --metrics "$METRICS" --steps "$STEPS" --ckpt "$CKPT_DIR" --wall "$((t_end - t_prep))"
echo "[done] total wall time $((t_end - t0))s; metrics: $METRICS"
