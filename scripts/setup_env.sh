#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install what it needs (idempotent).
#
#   source scripts/setup_env.sh     # activates .venv (creating and filling it on first use)
#
# torch is installed first, pinned to the 2.13.0 CPU build (this workplace keeps that wheel on
# disk; an unpinned torch would pull a multi-GB CUDA build), then the package with its test
# extra (verl[verl-core]==0.9.1, math-verify, ...). A stamp holding the hash of pyproject.toml
# skips the installs when nothing changed. Env: VENV_DIR (default <repo>/.venv), PYTHON (python3).
# On a GPU machine install the `gpu` extra instead: pip install -e ".[gpu]".

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "source this file: source scripts/setup_env.sh" >&2
  exit 2
fi
_lpreg_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$_lpreg_repo/.venv}"

if [[ ! -x "$VENV_DIR/bin/python" ]]; then
  echo "[setup] creating $VENV_DIR" >&2
  "${PYTHON:-python3}" -m venv "$VENV_DIR" || return 1
fi
# shellcheck disable=SC1091
source "$VENV_DIR/bin/activate"

_lpreg_stamp="$VENV_DIR/.verl_lpreg_stamp"
_lpreg_want="$(sha256sum "$_lpreg_repo/pyproject.toml" | cut -d' ' -f1)"
if [[ "$(cat "$_lpreg_stamp" 2>/dev/null)" != "$_lpreg_want" ]]; then
  echo "[setup] installing torch 2.13.0 (CPU) and verl-lpreg[test] into $VENV_DIR (first run: a few minutes)" >&2
  {
    python -m pip install --quiet --upgrade pip &&
      python -m pip install --quiet "torch==2.13.0" &&
      python -m pip install --quiet -e "${_lpreg_repo}[test]"
  } >&2 || { echo "[setup] installation failed" >&2; return 1; }
  echo "$_lpreg_want" >"$_lpreg_stamp"
fi
unset _lpreg_repo _lpreg_stamp _lpreg_want
