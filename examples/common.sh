# shellcheck shell=bash
# Sourced by every recipe under examples/: what all of the paper's runs share (docs/method.md §4), the
# environment variables that place a run on a cluster, and the launcher.
#
# A recipe sets MODEL_PATH and EXP_NAME, sources this file, and calls
#     lpreg_submit python3 -m verl_lpreg.main_ppo "${LPREG_COMMON_ARGS[@]}" <its own overrides> "$@"
# Every variable below can be overridden from the environment, e.g.
#     NNODES=2 DATA_DIR=/shared/data bash examples/lp_reg/run_qwen3_14b_lp_reg_onpolicy.sh
# and any hydra override can be appended on the command line; `--cfg job` prints the fully
# resolved config and exits (this file adds hydra's `--resolve` for you).

# ---- data: written by `python -m verl_lpreg.data_prep <dataset> --output <file.parquet>`
DATA_DIR=${DATA_DIR:-$HOME/data/lp_reg}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/dapo_math_17k.parquet}
# Space- or comma-separated paths, or a hydra list "[a,b]". Validation scores are
# val-core/<data_source>/acc/mean@1 (greedy); AIME avg@16 at T=0.6 is the offline evaluator's job.
VAL_FILES=${VAL_FILES:-"$DATA_DIR/aime24.parquet $DATA_DIR/aime25.parquet $DATA_DIR/math500.parquet $DATA_DIR/minerva.parquet $DATA_DIR/olympiadbench.parquet"}

# ---- models and outputs (on a filesystem that every node sees)
MODELS_DIR=${MODELS_DIR:-$HOME/models}
CKPTS_ROOT=${CKPTS_ROOT:-$HOME/ckpts/verl_lpreg}
CKPTS_DIR=${CKPTS_DIR:-$CKPTS_ROOT/${EXP_NAME:?the recipe sets EXP_NAME before sourcing common.sh}}

# ---- cluster: 8 nodes x 8 GPUs in the paper
NNODES=${NNODES:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
ROLLOUT_TP=${ROLLOUT_TP:-1}             # vLLM tensor parallel size (the reference: 1)
ROLLOUT_GPU_MEM=${ROLLOUT_GPU_MEM:-0.85} # vLLM gpu_memory_utilization (the reference: 0.85)
SP_SIZE=${SP_SIZE:-1}                   # Ulysses sequence parallel size (the reference: 1)

# ---- logging
PROJECT_NAME=${PROJECT_NAME:-verl_lpreg}
LOGGER=${LOGGER:-[console,wandb]}

# ---- Ray: with RAY_ADDRESS set (e.g. http://<head>:8265) the run is a `ray job submit`
RUNTIME_ENV=${RUNTIME_ENV:-}            # a runtime-env YAML file; else RUNTIME_ENV_JSON is used
RUNTIME_ENV_JSON=${RUNTIME_ENV_JSON:-'{"env_vars": {"HYDRA_FULL_ERROR": "1"}}'}
RAY_SUBMIT_ARGS=${RAY_SUBMIT_ARGS:-}    # extra flags for `ray job submit`, e.g. --no-wait

# "a b,c" -> ['a','b','c'] (hydra list of quoted strings); "[...]" passes through unchanged.
lpreg_hydra_list() {
    if [[ $1 == \[* ]]; then
        printf '%s' "$1"
        return
    fi
    local -a items
    local out="" item
    IFS=$' \t\n,' read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        out+="${out:+,}'${item}'"
    done
    printf '[%s]' "$out"
}

# Runs `python3 -m <module> ARGS...`: through `ray job submit` when RAY_ADDRESS is set,
# directly otherwise. Hydra's informational flags (--cfg, --help, --info) always run here, and
# a --cfg request gets --resolve. Hydra takes its overrides before its flags, so the overrides
# (key=value, +key=..., ~key) are moved in front of the flags and their values, order kept.
lpreg_submit() {
    local -a cmd=("$1" "$2" "$3") overrides=() flags=()
    shift 3
    local arg want_cfg=0 has_resolve=0 local_only=0
    for arg in "$@"; do
        case $arg in
            -*) flags+=("$arg") ;;
            *=* | [~+]*) overrides+=("$arg") ;;
            *) flags+=("$arg") ;;
        esac
        case $arg in
            --cfg | --cfg=* | -c) want_cfg=1 local_only=1 ;;
            --help | -h | --hydra-help | --info | --info=*) local_only=1 ;;
            --resolve) has_resolve=1 ;;
        esac
    done
    cmd+=("${overrides[@]}" "${flags[@]}")
    if ((want_cfg && !has_resolve)); then
        cmd+=(--resolve)
    fi
    if [[ -z ${RAY_ADDRESS:-} ]] || ((local_only)); then
        "${cmd[@]}"
        return
    fi
    local -a env_arg=(--runtime-env-json="$RUNTIME_ENV_JSON")
    if [[ -n $RUNTIME_ENV ]]; then
        env_arg=(--runtime-env="$RUNTIME_ENV")
    fi
    local -a extra
    read -r -a extra <<<"$RAY_SUBMIT_ARGS"
    ray job submit --address="$RAY_ADDRESS" "${env_arg[@]}" "${extra[@]}" -- "${cmd[@]}"
}

# shellcheck disable=SC2034  # used by the recipes that source this file
# docs/method.md §4: the settings every paper run shares. The recipes add the mini-batch size (256
# on-policy, 32 off-policy, the only difference between the two) and their loss.
LPREG_COMMON_ARGS=(
    # data: DAPO-Math-17k (17,398 prompts), 256 prompts x 8 responses, 2048 / 8192 tokens
    data.train_files="$(lpreg_hydra_list "$TRAIN_FILE")"
    data.val_files="$(lpreg_hydra_list "$VAL_FILES")"
    data.train_batch_size=256
    data.max_prompt_length=2048
    data.max_response_length=8192
    data.truncation=left
    data.filter_overlong_prompts=False
    actor_rollout_ref.rollout.n=8
    # GRPO, no KL to a reference (neither loss nor reward), no entropy bonus
    algorithm.adv_estimator=grpo
    algorithm.norm_adv_by_std_in_grpo=True
    algorithm.use_kl_in_reward=False
    algorithm.kl_ctrl.kl_coef=0.0
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.kl_loss_coef=0.0
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    actor_rollout_ref.actor.clip_ratio_c=10.0
    actor_rollout_ref.actor.ppo_epochs=1
    # AdamW, lr 1e-6 constant, no warmup, no weight decay, grad-norm clip 1.0
    # (optim.clip_grad is what verl 0.9.1's engine reads; grad_clip is the legacy worker's key)
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.optim.lr_scheduler_type=constant
    actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.0
    actor_rollout_ref.actor.optim.weight_decay=0.0
    actor_rollout_ref.actor.optim.clip_grad=1.0
    actor_rollout_ref.actor.grad_clip=1.0
    # model: remove-padding, gradient checkpointing
    actor_rollout_ref.model.path="${MODEL_PATH:?the recipe sets MODEL_PATH before sourcing common.sh}"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.model.enable_gradient_checkpointing=True
    actor_rollout_ref.actor.ulysses_sequence_parallel_size="$SP_SIZE"
    # dynamic batch: 30,720 tokens per GPU for the update and for the log-prob passes
    actor_rollout_ref.actor.use_dynamic_bsz=True
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=30720
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=30720
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=30720
    # vLLM rollout at temperature 1.0, top_p 1.0
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.top_p=1.0
    actor_rollout_ref.rollout.top_k=-1
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
    actor_rollout_ref.rollout.gpu_memory_utilization="$ROLLOUT_GPU_MEM"
    actor_rollout_ref.rollout.max_num_batched_tokens=30720
    # validation every 8 steps, greedy (temperature 0 is greedy in verl 0.9.1), one sample
    actor_rollout_ref.rollout.val_kwargs.temperature=0
    actor_rollout_ref.rollout.val_kwargs.top_p=1.0
    actor_rollout_ref.rollout.val_kwargs.top_k=-1
    actor_rollout_ref.rollout.val_kwargs.do_sample=False
    actor_rollout_ref.rollout.val_kwargs.n=1
    trainer.test_freq=8
    trainer.val_before_train=False
    # 15 epochs (about 1,000 steps), a checkpoint every 64 steps, resumable
    trainer.total_epochs=15
    trainer.save_freq=64
    trainer.resume_mode=auto
    trainer.default_local_dir="$CKPTS_DIR"
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$GPUS_PER_NODE"
    trainer.project_name="$PROJECT_NAME"
    trainer.experiment_name="$EXP_NAME"
    trainer.logger="$LOGGER"
)
