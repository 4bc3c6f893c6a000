# shellcheck shell=bash disable=SC2154  # PYTHON, t0, t_prep, ... are set by the sourcing script
# Shared by run_cpu.sh and run_gpu_smoke.sh (sourced, not run). The caller sets PYTHON, HERE,
# OUT_DIR, METRICS (the run's metrics history), LOG, STEPS, CKPT_DIR, and for
# lpreg_quickstart_train also t0 (script start) and t_prep (end of the preparation).
#
# lpreg_quickstart_check ARGS...: composes the trainer config with ARGS exactly as main_ppo will
#   (hydra) and runs our start-up checks (check_config); on an error it says so and exits 2
#   before anything is prepared.
# lpreg_quickstart_train ARGS...: runs `$PYTHON -m verl_lpreg.main_ppo ARGS` in its own process
#   group in the background (full log in $LOG), prints a progress line per step, waits, and
#   prints the summary of the whole run. It sets what it relies on itself (file logger, STEPS
#   steps, checkpoints in CKPT_DIR, resumed automatically, validation before training); ARGS come
#   after and can override. Ctrl-C / SIGTERM / SIGHUP stop the training (its whole process
#   group), say where the last checkpoint is and how to resume; the script's exit, however it
#   ends, takes the training with it (also a SIGKILL of the script: progress.py notices).
#
# Metrics: verl's file logger rewrites its file at every start, so a training process writes to
# $OUT_DIR/.metrics.segment.jsonl and its records are appended to the run's one history $METRICS
# when it ends (also when interrupted, or at the next start after a kill). A resumed segment is
# preceded by a line {"resumed_from": N}: the readers (verl_lpreg.plot.read_history, the summary,
# python -m verl_lpreg.plot) drop the earlier rows of steps after checkpoint N, so a resumed run
# reads as one run.

lpreg_quickstart_settings() {
  QS_SETTINGS=(
    trainer.logger="[console,file]"
    trainer.project_name=verl_lpreg_quickstart
    trainer.total_training_steps="$STEPS"
    trainer.default_local_dir="$CKPT_DIR"
    trainer.resume_mode=auto
    trainer.val_before_train=true
  )
}

lpreg_quickstart_check() {
  lpreg_quickstart_settings
  if ! "$PYTHON" "$HERE/check_config.py" "${QS_SETTINGS[@]}" "$@"; then
    echo "[error] the trainer config is invalid (above); nothing was prepared or started" >&2
    exit 2
  fi
}

lpreg_quickstart_stop_training() {
  if [[ -n "${FOLLOW_PID:-}" ]]; then kill "$FOLLOW_PID" 2>/dev/null || true; FOLLOW_PID=""; fi
  [[ -n "${TRAIN_PID:-}" ]] || return 0
  if kill -TERM -- "-$TRAIN_PID" 2>/dev/null; then
    local _
    for _ in $(seq 1 100); do  # up to 20 s for Ray to shut its workers down
      kill -0 -- "-$TRAIN_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL -- "-$TRAIN_PID" 2>/dev/null || true
  fi
  wait "$TRAIN_PID" 2>/dev/null || true
  TRAIN_PID=""
}

lpreg_quickstart_interrupted() {
  trap - INT TERM HUP
  echo >&2
  echo "[interrupted] ($1) stopping the training ..." >&2
  lpreg_quickstart_stop_training
  "$PYTHON" "$HERE/progress.py" fold --history "$METRICS" --segment "$QS_SEGMENT" || true
  local latest="$CKPT_DIR/latest_checkpointed_iteration.txt"
  if [[ -f "$latest" ]]; then
    echo "[interrupted] last checkpoint: $CKPT_DIR/global_step_$(cat "$latest")" >&2
    echo "[interrupted] to resume from it, run the same command again with OUT_DIR=$OUT_DIR (a larger STEPS trains further)" >&2
  else
    echo "[interrupted] no checkpoint was written yet (trainer.save_freq); running the same command again starts over" >&2
  fi
  echo "[interrupted] metrics so far: $METRICS; full log: $LOG" >&2
  exit 130
}

lpreg_quickstart_train() {
  lpreg_quickstart_settings
  QS_SEGMENT="$OUT_DIR/.metrics.segment.jsonl"
  local latest="$CKPT_DIR/latest_checkpointed_iteration.txt" resume=""
  if [[ -f "$latest" ]]; then resume="$(cat "$latest")"; fi
  "$PYTHON" "$HERE/progress.py" begin --history "$METRICS" --segment "$QS_SEGMENT" ${resume:+--resumed-from "$resume"}
  rm -f "$OUT_DIR/.first_metrics"
  trap 'lpreg_quickstart_interrupted SIGINT' INT
  trap 'lpreg_quickstart_interrupted SIGTERM' TERM
  trap 'lpreg_quickstart_interrupted SIGHUP' HUP
  trap 'lpreg_quickstart_stop_training' EXIT
  VERL_FILE_LOGGER_PATH="$QS_SEGMENT" setsid "$PYTHON" -m verl_lpreg.main_ppo "${QS_SETTINGS[@]}" "$@" >"$LOG" 2>&1 &
  TRAIN_PID=$!
  # In the background too, so that a signal to this script is handled at once (bash runs a trap
  # only after a foreground child returns, but interrupts `wait`).
  "$PYTHON" "$HERE/progress.py" follow --metrics "$QS_SEGMENT" --pid "$TRAIN_PID" --parent "$$" --steps "$STEPS" \
    --mark "$OUT_DIR/.first_metrics" &
  FOLLOW_PID=$!
  wait "$FOLLOW_PID" || true
  FOLLOW_PID=""
  local rc=0 t_end startup=""
  wait "$TRAIN_PID" || rc=$?
  TRAIN_PID=""
  trap - INT TERM HUP EXIT
  t_end=$(date +%s)
  "$PYTHON" "$HERE/progress.py" fold --history "$METRICS" --segment "$QS_SEGMENT"
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
