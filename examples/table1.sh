#!/usr/bin/env bash
# The Table 1 sweep of arXiv 2510.03222 (Lp-Reg and its baselines): one entry per run.
#
#   bash examples/table1.sh list                         # name, recipe, paper row
#   bash examples/table1.sh run lp_reg_14b_on grpo_14b_on # these runs, one after the other
#   bash examples/table1.sh run all                      # the whole sweep
#   bash examples/table1.sh run grpo_14b_on -- trainer.total_epochs=1   # overrides for each run
#
# Each run keeps its recipe's experiment name, so its checkpoints go to
# $CKPTS_ROOT/<experiment name> and its logs to <PROJECT_NAME>/<experiment name>: EXP_NAME,
# CKPTS_DIR and MODEL_PATH are cleared for every run (set MODELS_DIR, CKPTS_ROOT, DATA_DIR,
# NNODES, RAY_ADDRESS, ... as for a single recipe; see common.sh). With RAY_ADDRESS set each
# run is a `ray job submit` that waits for the job to end (do not add --no-wait here). The
# sweep stops at the first failed run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=sweep.sh
source "$HERE/sweep.sh"

# name | recipe (relative to examples/) | Table 1 row (model block, method, setting); the paper has
# no on-policy GSPO, Clip-Higher or KL-Cov row and no off-policy entropy-loss row (14B: listed anyway)
SWEEP=(
    "lp_reg_14b_on|lp_reg/run_qwen3_14b_lp_reg_onpolicy.sh|Qwen3-14B-Base: Lp-Reg, on-policy"
    "lp_reg_14b_off|lp_reg/run_qwen3_14b_lp_reg_offpolicy.sh|Qwen3-14B-Base: Lp-Reg, off-policy"
    "grpo_14b_on|baselines/run_qwen3_14b_grpo_onpolicy.sh|Qwen3-14B-Base: GRPO, on-policy"
    "clip_higher_14b_on|baselines/run_qwen3_14b_clip_higher_onpolicy.sh|Qwen3-14B-Base: Clip-Higher, on-policy (not in the paper)"
    "gspo_14b_on|baselines/run_qwen3_14b_gspo_onpolicy.sh|Qwen3-14B-Base: GSPO, on-policy (not in the paper)"
    "kl_cov_14b_on|baselines/run_qwen3_14b_kl_cov_onpolicy.sh|Qwen3-14B-Base: KL-Cov, on-policy (not in the paper)"
    "entropy_bonus_14b_on|baselines/run_qwen3_14b_entropy_bonus_onpolicy.sh|Qwen3-14B-Base: GRPO + entropy loss, on-policy"
    "80_20_14b_on|baselines/run_qwen3_14b_80_20_onpolicy.sh|Qwen3-14B-Base: 80/20, on-policy"
    "grpo_14b_off|baselines/run_qwen3_14b_grpo_offpolicy.sh|Qwen3-14B-Base: GRPO, off-policy"
    "clip_higher_14b_off|baselines/run_qwen3_14b_clip_higher_offpolicy.sh|Qwen3-14B-Base: Clip-Higher, off-policy"
    "gspo_14b_off|baselines/run_qwen3_14b_gspo_offpolicy.sh|Qwen3-14B-Base: GSPO, off-policy"
    "kl_cov_14b_off|baselines/run_qwen3_14b_kl_cov_offpolicy.sh|Qwen3-14B-Base: KL-Cov, off-policy"
    "entropy_bonus_14b_off|baselines/run_qwen3_14b_entropy_bonus_offpolicy.sh|Qwen3-14B-Base: GRPO + entropy loss, off-policy (not in the paper)"
    "80_20_14b_off|baselines/run_qwen3_14b_80_20_offpolicy.sh|Qwen3-14B-Base: 80/20, off-policy"
    "lp_reg_32b_on|lp_reg/run_qwen2.5_32b_lp_reg_onpolicy.sh|Qwen2.5-32B-Base: Lp-Reg, on-policy"
    "lp_reg_32b_off|lp_reg/run_qwen2.5_32b_lp_reg_offpolicy.sh|Qwen2.5-32B-Base: Lp-Reg, off-policy"
    "grpo_32b_on|baselines/run_qwen2.5_32b_grpo_onpolicy.sh|Qwen2.5-32B-Base: GRPO, on-policy"
    "entropy_bonus_32b_on|baselines/run_qwen2.5_32b_entropy_bonus_onpolicy.sh|Qwen2.5-32B-Base: GRPO + entropy loss, on-policy"
    "80_20_32b_on|baselines/run_qwen2.5_32b_80_20_onpolicy.sh|Qwen2.5-32B-Base: 80/20, on-policy"
    "grpo_32b_off|baselines/run_qwen2.5_32b_grpo_offpolicy.sh|Qwen2.5-32B-Base: GRPO, off-policy"
    "gspo_32b_off|baselines/run_qwen2.5_32b_gspo_offpolicy.sh|Qwen2.5-32B-Base: GSPO, off-policy"
    "clip_higher_32b_off|baselines/run_qwen2.5_32b_clip_higher_offpolicy.sh|Qwen2.5-32B-Base: Clip-Higher, off-policy"
    "kl_cov_32b_off|baselines/run_qwen2.5_32b_kl_cov_offpolicy.sh|Qwen2.5-32B-Base: KL-Cov, off-policy"
    "80_20_32b_off|baselines/run_qwen2.5_32b_80_20_offpolicy.sh|Qwen2.5-32B-Base: 80/20, off-policy"
)
SWEEP_TITLE="PAPER ROW (Table 1)"
SWEEP_USAGE=4,7

lpreg_sweep "$@"
