# shellcheck shell=bash
# Shared by scripts/setup.sh and scripts/test.sh (sourced, not run): system tools, the virtualenv
# at .venv, and the project's install into it. The caller sets REPO_ROOT and `set -euo pipefail`.
#
# Environment: PYTHON (default python3) picks the interpreter for the virtualenv;
# EXCAMERA_REBUILD=1 forces `pip install` even when nothing that is compiled has changed;
# EXCAMERA_LIBVPX=0 leaves out the libvpx binding (setup.py), even where libvpx-dev is installed.

VENV="$REPO_ROOT/.venv"
VENV_PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- timings -------------------------------------------------------------------------------
# `step NAME` starts a step (and ends the previous one); the EXIT trap prints every step's time,
# also when a step fails.

_now_us() {
    if [[ -n "${EPOCHREALTIME:-}" ]]; then
        echo "${EPOCHREALTIME//[.,]/}"
    else
        echo "$(( $(date +%s) * 1000000 ))"
    fi
}

_fmt_us() { printf '%d.%01d s' $(( $1 / 1000000 )) $(( $1 % 1000000 / 100000 )); }

_TIMINGS=()
_STEP=""
_STEP_T0=0
_RUN_T0=$(_now_us)

_end_step() {
    if [[ -n "$_STEP" ]]; then
        _TIMINGS+=("$(printf '%10s  %s' "$(_fmt_us $(( $(_now_us) - _STEP_T0 )))" "$_STEP")")
        _STEP=""
    fi
}

step() {
    _end_step
    _STEP=$1
    _STEP_T0=$(_now_us)
    say "$1"
}

_report_timings() {
    local rc=$?
    local failed=$_STEP
    _end_step
    echo
    echo "timings:"
    [[ ${#_TIMINGS[@]} -eq 0 ]] || printf '%s\n' "${_TIMINGS[@]}"
    printf '%10s  total\n' "$(_fmt_us $(( $(_now_us) - _RUN_T0 )))"
    if [[ $rc -ne 0 ]]; then
        [[ -n "$failed" ]] && echo "failed during: $failed (exit $rc)" >&2
    fi
    return "$rc"
}
trap _report_timings EXIT

# --- system tools --------------------------------------------------------------------------

_is_root() { [[ $(id -u) -eq 0 ]]; }

# libvpx's development files (headers, the -lvpx link): setup.py builds the in-process binding
# of libvpx's encoder (shared.libvpx) only where they are found.
_have_libvpx_dev() {
    if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists vpx 2>/dev/null; then
        return 0
    fi
    local dir
    for dir in /usr/include /usr/local/include /opt/homebrew/include; do
        [[ -f $dir/vpx/vpx_encoder.h ]] && return 0
    done
    return 1
}

# Debian packages for what is missing: vpxenc/vpxdec (tests, benchmarks, the sample clip),
# libvpx-dev (phase 1 in process; optional, vpxenc does it otherwise), and for Debian's own
# python3 its venv module and headers (other Pythons ship both).
ensure_system_tools() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=/path/to/python3)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$PYTHON is $("$PYTHON" -V 2>&1); excamera needs Python >= 3.10"

    local packages=() optional=()
    if ! command -v vpxenc >/dev/null 2>&1 || ! command -v vpxdec >/dev/null 2>&1; then
        packages+=(vpx-tools)
    fi
    _have_libvpx_dev || optional+=(libvpx-dev)
    if ! command -v "${CC:-cc}" >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
        packages+=(gcc)
    fi
    local py_path
    py_path=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')
    if [[ $py_path == /usr/bin/* ]]; then
        "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || packages+=(python3-venv)
        "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
            || packages+=(python3-dev)
    fi
    if [[ ${#packages[@]} -eq 0 && ${#optional[@]} -eq 0 ]]; then
        echo "vpxenc, vpxdec, libvpx-dev, a C compiler and $PYTHON ($("$PYTHON" -V 2>&1))" \
            "are present"
        return
    fi
    if _is_root && command -v apt-get >/dev/null 2>&1; then
        packages+=(${optional[@]+"${optional[@]}"})
        say "installing ${packages[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${packages[@]}"
    elif [[ ${#packages[@]} -eq 0 ]]; then
        echo "note: libvpx's headers are missing, so phase 1 will run vpxenc instead of libvpx in" \
            "process; for the binding: sudo apt-get install libvpx-dev (macOS: brew install" \
            "libvpx), then run this again"
    else
        packages+=(${optional[@]+"${optional[@]}"})
        die "missing system packages: ${packages[*]}.
Install them and run this again, e.g. on Debian/Ubuntu:
    sudo apt-get install ${packages[*]}
(on macOS: brew install libvpx). As root with apt-get, this script installs them itself."
    fi
}

# --- the virtualenv and the project --------------------------------------------------------

ensure_venv() {
    if [[ -x "$VENV_PY" ]] && "$VENV_PY" -m pip --version >/dev/null 2>&1; then
        echo "using $VENV ($("$VENV_PY" -V 2>&1))"
        return
    fi
    if [[ -e "$VENV" ]]; then
        [[ -f "$VENV/pyvenv.cfg" ]] || die "$VENV exists and is not a virtualenv: move it away"
        echo "$VENV is incomplete or its Python is gone: recreating it"
        rm -rf "$VENV"
    fi
    "$PYTHON" -m venv "$VENV"
    echo "created $VENV ($("$VENV_PY" -V 2>&1))"
}

# A digest of everything `pip install` turns into compiled code or installed metadata: the
# requested extras, the interpreter, setup.py, pyproject.toml and every Cython/C source.
_build_fingerprint() {
    (cd "$REPO_ROOT" && "$VENV_PY" - "$1" <<'EOF'
import hashlib
import sys
from pathlib import Path

digest = hashlib.sha256(f"{sys.argv[1]}\0{sys.version}\0".encode())
sources = {".pyx", ".pxd", ".pxi", ".c", ".h", ".cpp"}
files = [Path("setup.py"), Path("pyproject.toml")]
files += sorted(p for p in Path("shared").rglob("*") if p.suffix in sources and p.is_file())
for path in files:
    if path.is_file():
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
print(digest.hexdigest())
EOF
    )
}

# Every .pyx under shared/ has a built extension module next to it (the libvpx binding's only
# where libvpx's headers are installed: setup.py skips it elsewhere).
_extensions_built() {
    local libvpx=0
    [[ ${EXCAMERA_LIBVPX:-1} != 0 ]] && _have_libvpx_dev && libvpx=1
    (cd "$REPO_ROOT" && "$VENV_PY" - "$libvpx" <<'EOF'
import importlib.util
import sys
from pathlib import Path

for pyx in Path("shared").rglob("*.pyx"):
    if pyx.parts[:2] == ("shared", "libvpx") and sys.argv[1] != "1":
        continue
    name = ".".join(pyx.with_suffix("").parts)
    spec = importlib.util.find_spec(name)
    if spec is None:
        print(f"not built: {name}")
        sys.exit(1)
EOF
    ) 2>/dev/null
}

# install_project SPEC: `pip install -e SPEC` (this compiles the Cython extensions), skipped when
# the last install of the same SPEC saw the same sources and every extension is still built.
install_project() {
    local spec=$1 stamp want
    stamp="$VENV/.excamera-installed-$(printf '%s' "$spec" | tr -c 'A-Za-z0-9' '_')"
    want=$(_build_fingerprint "$spec")
    if [[ "${EXCAMERA_REBUILD:-0}" != 1 && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && _extensions_built; then
        echo "pip install -e '$spec': up to date (EXCAMERA_REBUILD=1 forces it)"
        return
    fi
    rm -f "$stamp"
    # Build requirements go into the venv from pyproject.toml, so rebuilds skip pip's isolated
    # build environment (faster, and the same Cython and numpy every time).
    local requires=() line
    while IFS= read -r line; do
        requires+=("$line")
    done < <("$VENV_PY" - "$REPO_ROOT/pyproject.toml" <<'EOF'
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: leave it to pip's build isolation
    sys.exit(0)
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
EOF
    )
    local isolation=()
    if [[ ${#requires[@]} -gt 0 ]]; then
        "$VENV_PY" -m pip install -q "${requires[@]}"
        isolation=(--no-build-isolation)
    fi
    (cd "$REPO_ROOT" && "$VENV_PY" -m pip install -q ${isolation[@]+"${isolation[@]}"} -e "$spec")
    printf '%s\n' "$want" >"$stamp"
}

# --- the services' local peers: RabbitMQ and PostgreSQL ------------------------------------

# RabbitMQ's consumer timeout, above the longest task (services/config.py DEADLINES): its
# default of 30 minutes would take a long 4K chunk's encode away from its worker.
RABBITMQ_CONSUMER_TIMEOUT_MS=10800000

# Start RabbitMQ if it is installed and down, enable the consistent-hash exchange (the
# rebaser's shards) and raise the consumer timeout; start PostgreSQL if it is installed and
# down. Where either is missing, say what the services need (the codec and `excamera encode`
# need neither).
ensure_services() {
    if command -v rabbitmqctl >/dev/null 2>&1; then
        if ! rabbitmqctl status >/dev/null 2>&1; then
            if _is_root; then
                say "starting RabbitMQ (rabbitmq-server -detached)"
                rabbitmq-server -detached >/dev/null 2>&1 || true
                local tries=0
                until rabbitmqctl status >/dev/null 2>&1; do
                    tries=$((tries + 1))
                    [[ $tries -gt 60 ]] && die "RabbitMQ did not start within 60 s"
                    sleep 1
                done
            else
                echo "note: RabbitMQ is not running; the services need it (rabbitmq-server -detached)"
                return
            fi
        fi
        rabbitmq-plugins enable --quiet rabbitmq_consistent_hash_exchange >/dev/null 2>&1 \
            || echo "note: could not enable rabbitmq_consistent_hash_exchange (run as root)"
        rabbitmqctl eval "application:set_env(rabbit, consumer_timeout, $RABBITMQ_CONSUMER_TIMEOUT_MS)." \
            >/dev/null 2>&1 || echo "note: could not raise RabbitMQ's consumer_timeout"
        echo "RabbitMQ: running, consistent-hash exchange enabled, consumer timeout 3 h"
    else
        echo "note: RabbitMQ is not installed; the services need it (apt-get install rabbitmq-server)"
    fi
    if command -v pg_isready >/dev/null 2>&1; then
        if ! pg_isready -q -h 127.0.0.1 -p 5432; then
            if _is_root && command -v pg_ctlcluster >/dev/null 2>&1; then
                say "starting PostgreSQL"
                pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start \
                    || true
            fi
        fi
        if pg_isready -q -h 127.0.0.1 -p 5432; then
            echo "PostgreSQL: running on 127.0.0.1:5432"
        else
            echo "note: PostgreSQL is not running on 127.0.0.1:5432; the services keep job records there"
        fi
    else
        echo "note: PostgreSQL is not installed; the services keep job records in it"
    fi
}
