# shellcheck shell=bash disable=SC2154  # PYTHON, t0, t_prep, ... are set by the sourcing script
# Shared by run_cpu.sh and run_gpu_smoke.sh (sourced, not run).
#
# lpreg_quickstart_train ARGS...: runs `$PYTHON -m verl_lpreg.main_ppo ARGS` in the background
# (full log in $LOG), prints a progress line per step from verl's file-logger output $METRICS,
# waits, and prints the summary. It sets what it relies on itself: the file logger, STEPS steps,
# checkpoints in CKPT_DIR (resumed), validation before training; ARGS come after and can override. The caller sets PYTHON, HERE, OUT_DIR, METRICS, LOG, STEPS,
# CKPT_DIR, t0 (script start) and t_prep (end of the preparation), and exports
# VERL_FILE_LOGGER_PATH=$METRICS.

lpreg_quickstart_train() {
  rm -f "$METRICS" "$OUT_DIR/.first_metrics"
  "$PYTHON" -m verl_lpreg.main_ppo \
    trainer.logger="[console,file]" \
    trainer.project_name=verl_lpreg_quickstart \
    trainer.total_training_steps="$STEPS" \
    trainer.default_local_dir="$CKPT_DIR" \
    trainer.resume_mode=auto \
    trainer.val_before_train=true \
    "$@" >"$LOG" 2>&1 &
  TRAIN_PID=$!
  trap 'kill "$TRAIN_PID" 2>/dev/null || true' INT TERM
  "$PYTHON" "$HERE/progress.py" follow --metrics "$METRICS" --pid "$TRAIN_PID" --steps "$STEPS" \
    --mark "$OUT_DIR/.first_metrics" || true
  local rc=0 t_end startup=""
  wait "$TRAIN_PID" || rc=$?
  t_end=$(date +%s)
  if [[ $rc -ne 0 ]]; then
    echo "[error] training failed (exit $rc); last lines of $LOG:" >&2
    grep -v -e "target_num_threads" "$LOG" | tail -40 >&2
    return "$rc"
  fi
  if [[ -f "$OUT_DIR/.first_metrics" ]]; then
    startup=$("$PYTHON" -c "print(float(open('$OUT_DIR/.first_metrics').read()) - $t_prep)")
  fi
  "$PYTHON" "$HERE/progress.py" summary --metrics "$METRICS" --steps "$STEPS" --ckpt "$CKPT_DIR" \
    --wall "$((t_end - t_prep))" ${startup:+--startup "$startup"}
  echo "[done] total wall time $((t_end - t0))s (preparation $((t_prep - t0))s); metrics: $METRICS"
}

# lpreg_quickstart_keep_metrics: on a resumed run, keep the previous run's metrics file (verl's
# file logger would overwrite it) as metrics.until_step<N>.jsonl.
lpreg_quickstart_keep_metrics() {
  local step
  step="$(cat "$CKPT_DIR/latest_checkpointed_iteration.txt")"
  if [[ -f "$METRICS" ]]; then mv "$METRICS" "$OUT_DIR/metrics.until_step${step}.jsonl"; fi
}
