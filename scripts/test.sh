#!/usr/bin/env bash
# The project's test command:  bash scripts/test.sh [pytest arguments...]
#
# Idempotent, from a fresh machine on: installs vpx-tools and libvpx-dev if missing (as root,
# with apt-get), creates .venv, installs the project with its test extra (compiling the Cython
# codec and the libvpx binding; skipped when nothing compiled has changed), then runs
# `ruff check .` and `python -m pytest -q ARGS`.
# Fails when pytest collects no tests (its exit code 5). Prints each step's time.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

step "system tools"
ensure_system_tools

step "services: RabbitMQ, PostgreSQL"
ensure_services

step "virtualenv"
ensure_venv

step "install (pip install -e '.[test]')"
install_project '.[test]'

if [[ -d ../shared ]]; then
    echo "reference material: $(cd ../shared && pwd)"
else
    echo "reference material: ../shared is absent; tests that need it skip (they fail with CI=true)"
fi

step "lint (ruff check .)"
lint_rc=0
"$VENV_PY" -m ruff check . || lint_rc=$?

step "tests (pytest -q${*:+ $*})"
test_rc=0
"$VENV_PY" -m pytest -q "$@" || test_rc=$?

_end_step
if [[ $test_rc -eq 5 ]]; then
    die "pytest collected no tests (exit code 5): that is a failure here"
elif [[ $test_rc -ne 0 ]]; then
    die "pytest failed (exit code $test_rc)"
elif [[ $lint_rc -ne 0 ]]; then
    die "ruff check failed (exit code $lint_rc); the tests passed"
fi
say "lint and tests passed"
