#!/usr/bin/env bash
# Build the Lambda artifact:  bash deploy/package.sh OUT_DIR   ->  OUT_DIR/encoder.zip
#
# The zip holds, at its root (Lambda's /var/task): the shared and services packages with the
# compiled codec (Cython) and shared.libvpx.encoder (libvpx linked in statically, its heap wrapped
# as setup.py does), and every third-party dependency as the wheels built for the runtime.
# Both handlers (services.encoder/decoder.lambda_handler.handler) run from this one zip.
#
# Lambda's python3.13 runs on Amazon Linux 2023 (glibc 2.34); this machine's glibc is newer, so
# nothing is compiled with the system compiler: zig's clang (PyPI's ziglang) targets
# x86_64-linux-gnu.2.34 and links against that glibc's symbol versions, for libvpx (built from
# Debian's source package, security patches applied) and for the codec alike. The codec is
# compiled against the target interpreter's headers (Debian's libpython3.13-dev: this machine
# runs 3.11) and named with its ABI tag. Third-party wheels come from PyPI for the target
# platform (pip --platform/--python-version/--only-binary=:all:).
#
# Environment:
#   PYTHON_VERSION  target interpreter, default 3.13 (3.11, this machine's, works too: same
#                   recipe, and the artifact then imports here, which the packaging test uses)
#   GLIBC           glibc ceiling, default 2.34 (Amazon Linux 2023)
#   PYTHON          the interpreter that drives the build (default python3, >= 3.11)
# Work and caches go to build/lambda/ (libvpx, headers, wheels, compiled modules are reused).
# Needs root with apt-get on a machine without nasm or with no apt lists (Debian/Ubuntu), as
# scripts/test.sh does.
set -euo pipefail

usage() { echo "usage: bash deploy/package.sh OUT_DIR" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
PYTHON_VERSION="${PYTHON_VERSION:-3.13}"
GLIBC="${GLIBC:-2.34}"
PYTHON="${PYTHON:-python3}"
PYTAG="cp${PYTHON_VERSION/./}"
TARGET="x86_64-linux-gnu.$GLIBC"
WORK="$ROOT/build/lambda"
LIBVPX_VERSION="1.12.0"  # Debian 12's, the one the project's outputs are checked against
mkdir -p "$WORK"

# --- the build's own tools: Cython and numpy (setup.py's requirements) and zig -------------
TOOLS="$WORK/tools"
if [[ ! -f "$TOOLS/.ready" ]]; then
    say "tools: a virtualenv with cython, numpy, setuptools and ziglang ($TOOLS)"
    rm -rf "$TOOLS"
    "$PYTHON" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --upgrade pip
    "$TOOLS/bin/python" -m pip install -q "cython>=3.1,<4" "numpy>=2" "setuptools>=68" wheel \
        "ziglang>=0.13"
    touch "$TOOLS/.ready"
fi
TOOLS_PY="$TOOLS/bin/python"
HOST_VERSION=$("$TOOLS_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Compiler wrappers: one word each, since configure scripts and distutils split $CC on spaces.
# UBSan is off (zig enables it in unoptimized builds); -g0 keeps the modules small.
BIN="$WORK/bin-glibc$GLIBC"
mkdir -p "$BIN"
# zig's linker driver has no --exclude-libs (setup.py's way of keeping libvpx's symbols out of
# the module's exports, where PyAV's own libvpx could bind to them): a version script that
# exports only the module's PyInit_ function hides them just the same.
echo '{ global: PyInit_*; local: *; };' >"$BIN/exports.map"
cat >"$BIN/cc" <<EOF
#!/bin/sh
for arg; do
    shift
    case \$arg in
        -Wl,--exclude-libs,ALL) set -- "\$@" "-Wl,--version-script=$BIN/exports.map" ;;
        *) set -- "\$@" "\$arg" ;;
    esac
done
exec "$TOOLS_PY" -m ziglang cc -target $TARGET -fno-sanitize=all "\$@"
EOF
# libvpx 1.12 also compiles a C++ rate controller that nothing here calls: the static link
# leaves it (and any need for libc++) out.
cat >"$BIN/c++" <<EOF
#!/bin/sh
exec "$TOOLS_PY" -m ziglang c++ -target $TARGET -fno-sanitize=all "\$@"
EOF
for tool in ar ranlib; do
    printf '#!/bin/sh\nexec "%s" -m ziglang %s "$@"\n' "$TOOLS_PY" "$tool" >"$BIN/$tool"
done
chmod +x "$BIN"/*

# --- Debian packages: nasm (libvpx's assembly), libvpx's source, the target's headers -------
APT="$WORK/apt"
apt_private() {  # apt-get with a private source list (deb-src, or another release's debs)
    local name=$1; shift
    mkdir -p "$APT/$name/lists/partial" "$APT/$name/cache/archives/partial"
    apt-get -o Dir::Etc::SourceList="$APT/$name.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT/$name/lists" -o Dir::Cache="$APT/$name/cache" \
        -o APT::Sandbox::User=root "$@"
}
if ! command -v nasm >/dev/null 2>&1; then
    [[ $(id -u) -eq 0 ]] || die "nasm is missing (apt-get install nasm)"
    say "installing nasm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nasm >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nasm; }
fi

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
LIBVPX_SRC="$WORK/src/libvpx-$LIBVPX_VERSION"
if [[ ! -f "$LIBVPX_SRC/configure" ]]; then
    say "libvpx: Debian 12's source package (with its security patches)"
    mkdir -p "$APT" "$WORK/src"
    cat >"$APT/bookworm-src.list" <<EOF
deb-src [signed-by=$KEYRING] http://deb.debian.org/debian bookworm main
deb-src [signed-by=$KEYRING] http://deb.debian.org/debian-security bookworm-security main
EOF
    apt_private bookworm-src update -qq
    rm -rf "$WORK/src/dl" && mkdir -p "$WORK/src/dl"
    (cd "$WORK/src/dl" && apt_private bookworm-src source --download-only -qq "libvpx=$LIBVPX_VERSION-*" \
        2>/dev/null || apt_private bookworm-src source --download-only -qq libvpx)
    rm -rf "$LIBVPX_SRC"
    dpkg-source --no-check -x "$WORK"/src/dl/libvpx_*.dsc "$LIBVPX_SRC" >/dev/null
fi

LIBVPX="$WORK/libvpx-glibc$GLIBC"
if [[ ! -f "$LIBVPX/lib/libvpx.a" ]]; then
    say "libvpx: building the VP8 encoder, static and position-independent, for glibc $GLIBC"
    rm -rf "$WORK/libvpx-build" && mkdir -p "$WORK/libvpx-build"
    (
        cd "$WORK/libvpx-build"
        CC="$BIN/cc" CXX="$BIN/c++" LD="$BIN/cc" AR="$BIN/ar" RANLIB="$BIN/ranlib" \
            AS=nasm STRIP=true \
            "$LIBVPX_SRC/configure" --target=x86_64-linux-gcc --prefix="$LIBVPX" --as=nasm \
            --enable-pic --enable-static --disable-shared --disable-vp9 --disable-vp8-decoder \
            --disable-examples --disable-tools --disable-docs --disable-unit-tests \
            --disable-install-bins --disable-install-srcs --disable-debug \
            --enable-runtime-cpu-detect >configure.log 2>&1 \
            || { tail -30 configure.log >&2; die "libvpx's configure failed"; }
        make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log >&2; die "libvpx failed to build"; }
        make install >/dev/null
    )
fi

# --- the target interpreter's headers ----------------------------------------------------
if [[ $PYTHON_VERSION == "$HOST_VERSION" ]]; then
    PY_INCLUDES=()  # the build interpreter's own
else
    PY_HEADERS="$WORK/python$PYTHON_VERSION"
    if [[ ! -f "$PY_HEADERS/usr/include/python$PYTHON_VERSION/Python.h" ]]; then
        say "headers of Python $PYTHON_VERSION: Debian 13's libpython$PYTHON_VERSION-dev"
        mkdir -p "$APT"
        echo "deb [signed-by=$KEYRING] http://deb.debian.org/debian trixie main" >"$APT/trixie.list"
        apt_private trixie update -qq
        rm -rf "$PY_HEADERS" && mkdir -p "$PY_HEADERS/dl"
        (cd "$PY_HEADERS/dl" && apt_private trixie download -qq "libpython$PYTHON_VERSION-dev") \
            || die "no headers for Python $PYTHON_VERSION (Debian 13 has 3.13; or use this \
machine's $HOST_VERSION)"
        dpkg-deb -x "$PY_HEADERS"/dl/*.deb "$PY_HEADERS"
    fi
    # Debian's pyconfig.h includes the multiarch one by <x86_64-linux-gnu/python3.X/...>.
    PY_INCLUDES=(-I "$PY_HEADERS/usr/include/python$PYTHON_VERSION" -I "$PY_HEADERS/usr/include")
fi

# --- our package: the codec and the libvpx binding, for the target --------------------------
EXT_SUFFIX=".cpython-${PYTHON_VERSION/./}-x86_64-linux-gnu.so"
MODULES="$WORK/$PYTAG-glibc$GLIBC"
say "compiling the codec for $PYTAG, glibc $GLIBC ($MODULES)"
(
    cd "$ROOT"
    # setup.py finds libvpx.a through pkg-config and links it in with malloc/calloc wrapped.
    EXCAMERA_CYTHON_BUILD_DIR="$WORK/cython" PKG_CONFIG_PATH="$LIBVPX/lib/pkgconfig" CC="$BIN/cc" LDSHARED="$BIN/cc -shared" \
        CFLAGS="-g0" LDFLAGS="-s" SETUPTOOLS_EXT_SUFFIX="$EXT_SUFFIX" \
        "$TOOLS_PY" setup.py -q build_ext --build-lib "$MODULES/lib" \
        --build-temp "$MODULES/tmp" ${PY_INCLUDES[@]+"${PY_INCLUDES[@]}"} >"$WORK/setup-$PYTAG.log" 2>&1 \
        || { tail -40 "$WORK/setup-$PYTAG.log" >&2; die "compiling the codec failed"; }
)
[[ -f "$MODULES/lib/shared/libvpx/encoder$EXT_SUFFIX" ]] \
    || die "shared.libvpx.encoder was not built (see $WORK/setup-$PYTAG.log)"

# --- third-party wheels for the runtime's platform ----------------------------------------
REQUIREMENTS="$WORK/requirements-$PYTAG.txt"
NUMPY_BUILT=$("$TOOLS_PY" -c 'import numpy; print(numpy.__version__)')
"$TOOLS_PY" - "$ROOT/pyproject.toml" "$NUMPY_BUILT" >"$REQUIREMENTS" <<'EOF'
import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
requirements = list(project["dependencies"])
# The AWS side: boto3 (S3, SQS; bundled rather than the runtime's, whose version AWS picks) and
# pycurl (kombu's SQS transport). An `aws` extra, where the project has one, says the same.
requirements += project.get("optional-dependencies", {}).get("aws", ["boto3", "pycurl"])
# The codec was compiled against this numpy's headers: the runtime's must be at least as new.
requirements.append(f"numpy>={sys.argv[2]}")
print("\n".join(requirements))
EOF
WHEELS="$WORK/wheels-$PYTAG"
# pip takes the platform tags literally: name every manylinux level up to the ceiling.
PLATFORM_ARGS=(--python-version "$PYTHON_VERSION" --implementation cp --abi "$PYTAG"
               --only-binary=:all:)
for ((minor = ${GLIBC#*.}; minor >= 5; minor--)); do
    PLATFORM_ARGS+=(--platform "manylinux_2_${minor}_x86_64")
done
PLATFORM_ARGS+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64
                --platform manylinux1_x86_64)
say "wheels for $PYTAG manylinux <= $GLIBC"
"$TOOLS_PY" -m pip download -q -d "$WHEELS" "${PLATFORM_ARGS[@]}" -r "$REQUIREMENTS"

STAGE="$WORK/stage-$PYTAG"
rm -rf "$STAGE" && mkdir -p "$STAGE"
"$TOOLS_PY" -m pip install -q --no-compile --no-index --find-links "$WHEELS" --target "$STAGE" \
    "${PLATFORM_ARGS[@]}" -r "$REQUIREMENTS"

# Our own sources as the repository tracks them, and the modules compiled above.
(cd "$ROOT" && git ls-files -- 'shared/*.py' 'services/*.py') | while read -r file; do
    mkdir -p "$STAGE/$(dirname "$file")"
    cp "$ROOT/$file" "$STAGE/$file"
done
(cd "$MODULES/lib" && find . -name '*.so') | while read -r file; do
    cp "$MODULES/lib/$file" "$STAGE/$file"
done

# What Lambda never runs: byte code compiled for this machine's Python, the wheels' test suites
# and the console scripts (bin/).
# and the API models of AWS services the stack never calls (botocore loads a service's model
# only when a client for it is made; these are 27 of the artifact's 250 MB).
find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$STAGE/bin" "$STAGE"/numpy/*/tests "$STAGE"/numpy/tests "$STAGE"/numpy/_core/include
KEEP_BOTOCORE_MODELS=" s3 sqs sts lambda secretsmanager rds "
for model in "$STAGE"/botocore/data/*/; do
    [[ $KEEP_BOTOCORE_MODELS == *" $(basename "$model") "* ]] || rm -rf "$model"
done

say "writing $OUT/encoder.zip"
"$TOOLS_PY" - "$STAGE" "$OUT/encoder.zip" "$PYTHON_VERSION" "$GLIBC" <<'EOF'
import json
import os
import sys
import zipfile

stage, target, python_version, glibc = sys.argv[1:]
files = sorted(
    os.path.relpath(os.path.join(directory, name), stage)
    for directory, _, names in os.walk(stage) for name in names
)
unzipped = 0
# Fixed timestamps and order: the same inputs give the same zip (and the same CodeSha256).
with zipfile.ZipFile(target + ".tmp", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
    for name in files:
        path = os.path.join(stage, name)
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as handle:
            data = handle.read()
        unzipped += len(data)
        archive.writestr(info, data)
os.replace(target + ".tmp", target)
manifest = {
    "runtime": f"python{python_version}",
    "architecture": "x86_64",
    "glibc_max": glibc,
    "files": len(files),
    "unzipped_bytes": unzipped,
    "zipped_bytes": os.path.getsize(target),
}
with open(os.path.join(os.path.dirname(target), "encoder.json"), "w") as handle:
    json.dump(manifest, handle, indent=2)
print(json.dumps(manifest))
# Lambda refuses more than 250 MB unzipped (layers included).
if unzipped > 250_000_000:
    sys.exit(f"error: {unzipped / 1e6:.1f} MB unzipped is over Lambda's 250 MB")
EOF
