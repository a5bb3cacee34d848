#!/usr/bin/env bash
# Set up excamera on this machine:  bash scripts/setup.sh
#
# Idempotent: installs vpx-tools (vpxenc, vpxdec) and libvpx-dev if missing (as root, with
# apt-get), creates the virtualenv .venv and installs the project into it, compiling the Cython
# codec (and the libvpx binding where libvpx-dev is installed). Afterwards the command is
# .venv/bin/excamera (or `source .venv/bin/activate`, then `excamera`).
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

step "install (pip install -e .)"
install_project '.'

_end_step
[[ -x "$VENV/bin/excamera" ]] || die "the install did not create $VENV/bin/excamera"
say "installed: $VENV/bin/excamera"
