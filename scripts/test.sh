#!/usr/bin/env bash
# The test suite: sets up .venv (scripts/setup_env.sh), then runs pytest over tests/.
#
#   bash scripts/test.sh              # everything, the end-to-end quick-start test included
#   bash scripts/test.sh -m "not e2e" # skip the end-to-end runs
#   bash scripts/test.sh tests/test_loss.py -x
#
# ruff checks lint and formatting first. The recipe tests lint with shellcheck: installed with apt-get when missing and possible.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/setup_env.sh
source "$REPO/scripts/setup_env.sh"

if ! command -v shellcheck >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  echo "[test] installing shellcheck" >&2
  { apt-get update -qq && apt-get install -y -qq shellcheck; } >/dev/null 2>&1 || echo "[test] shellcheck unavailable" >&2
fi

# Lint and formatting (configured in pyproject.toml), before the slower tests.
ruff check --quiet .
ruff format --check --quiet .

status=0
python -m pytest -q "$@" || status=$?
# pytest exits 5 when a selection collects no test: that is not a failure of the suite.
if [[ "$status" == 5 ]]; then
  echo "[test] no tests selected" >&2
  exit 0
fi
exit "$status"
