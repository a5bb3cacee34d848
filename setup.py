"""Build the Cython extensions of the codec, and the libvpx binding where libvpx is found;
everything else is in pyproject.toml."""

import os
import shlex
import shutil
import subprocess
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CODEC_DIR = os.path.join("shared", "codec")

# One extension per concept; the hot inner functions are declared inline in .pxd files so
# callers in other modules compile them in (a cdef call across extensions is indirect).
CODEC_MODULES = [
    "tables",
    "frame_header",
    "modes",
    "tokens",
    "predict",
    "reconstruct",
    "loop_filter",
    "picture",
    "frame_record",
    "frame_writer",
    "state",
    "decoder",
    "encoder",
    "ssim_windows",
]

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}


def codec_extension(name: str) -> Extension:
    return Extension(
        f"shared.codec.{name}",
        [os.path.join(CODEC_DIR, f"{name}.pyx")],
        include_dirs=[CODEC_DIR, numpy.get_include()],
        extra_compile_args=["-O3", "-pthread", "-Wno-unused-function", "-Wno-unreachable-code"],
        extra_link_args=["-pthread"],  # rows.h: the rebase's wavefront threads
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


LIBVPX_DIR = os.path.join("shared", "libvpx")
# Where libvpx's headers may be when pkg-config does not know it.
LIBVPX_INCLUDE_DIRS = ["/usr/include", "/usr/local/include", "/opt/homebrew/include"]


def libvpx_flags() -> dict[str, list[str]] | None:
    """Compiler and linker flags for libvpx's encoder (pkg-config vpx, else vpx/vpx_encoder.h in
    a usual place and -lvpx), or None when its headers are not installed."""
    if shutil.which("pkg-config"):
        found = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "vpx"], capture_output=True, text=True
        )
        if found.returncode == 0:
            flags: dict[str, list[str]] = {"include_dirs": [], "library_dirs": [], "libraries": []}
            for flag in shlex.split(found.stdout):
                for prefix, key in (("-I", "include_dirs"), ("-L", "library_dirs"),
                                    ("-l", "libraries")):
                    if flag.startswith(prefix):
                        flags[key].append(flag[2:])
            if "vpx" not in flags["libraries"]:
                flags["libraries"].append("vpx")
            return flags
    for directory in LIBVPX_INCLUDE_DIRS:
        if os.path.isfile(os.path.join(directory, "vpx", "vpx_encoder.h")):
            if directory == "/usr/include":  # the compiler's and linker's own
                return {"include_dirs": [], "library_dirs": [], "libraries": ["vpx"]}
            lib = os.path.join(os.path.dirname(directory), "lib")
            return {
                "include_dirs": [directory],
                "library_dirs": [lib] if os.path.isdir(lib) else [],
                "libraries": ["vpx"],
            }
    return None


def static_libvpx(library_dirs: list[str]) -> str | None:
    """libvpx.a, to link libvpx into the extension with its allocations wrapped (GNU ld's
    --wrap, so Linux only), or None."""
    if not sys.platform.startswith("linux"):
        return None
    for directory in library_dirs:
        if os.path.isfile(os.path.join(directory, "libvpx.a")):
            return os.path.join(directory, "libvpx.a")
    compiler = shlex.split(os.environ.get("CC", "cc"))[0]
    try:
        found = subprocess.run(
            [compiler, "-print-file-name=libvpx.a"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None
    return os.path.realpath(found) if os.path.isabs(found) and os.path.isfile(found) else None


def libvpx_extensions() -> list[Extension]:
    """shared.libvpx.encoder (phase 1 in process), only where libvpx can be compiled against;
    elsewhere the pipeline runs the vpxenc command instead. EXCAMERA_LIBVPX=0 skips it. It is
    optional: should it fail to compile or link, the codec is still built (with a warning).

    Where libvpx.a is found, libvpx is linked in statically with its malloc and calloc wrapped
    by shared/libvpx/heap.c (zeroed, padded blocks), which makes its output a function of the
    input alone (heap.c says why); the module then has ZEROED_HEAP set. Otherwise it links
    -lvpx, and phase 1 uses it only when asked to (shared.pipeline.vpx)."""
    if os.environ.get("EXCAMERA_LIBVPX") == "0":
        print("note: EXCAMERA_LIBVPX=0: shared.libvpx is not built; phase 1 will run vpxenc")
        return []
    flags = libvpx_flags()
    if flags is None:
        print(
            "note: libvpx's headers were not found (Debian/Ubuntu: apt-get install libvpx-dev; "
            "macOS: brew install libvpx): shared.libvpx is not built; phase 1 will run vpxenc"
        )
        return []
    sources = [os.path.join(LIBVPX_DIR, "encoder.pyx")]
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    archive = static_libvpx(flags["library_dirs"])
    if archive is not None:
        sources.append(os.path.join(LIBVPX_DIR, "heap.c"))
        macros.append(("EXCAMERA_ZEROED_HEAP", "1"))
        link = {
            "extra_objects": [archive],
            "libraries": ["m", "pthread"],
            "extra_link_args": [
                "-Wl,--wrap=malloc", "-Wl,--wrap=calloc", "-Wl,--exclude-libs,ALL"
            ],
        }
        print(f"note: shared.libvpx links {archive} in, its heap zeroed (shared/libvpx/heap.c)")
    else:
        link = {"library_dirs": flags["library_dirs"], "libraries": flags["libraries"]}
        print(
            "note: libvpx.a was not found: shared.libvpx links libvpx dynamically, without the "
            "zeroed heap, so phase 1 keeps vpxenc unless EXCAMERA_PHASE1=libvpx"
        )
    return [
        Extension(
            "shared.libvpx.encoder",
            sources,
            include_dirs=[numpy.get_include(), *flags["include_dirs"]],
            extra_compile_args=["-O2"],
            define_macros=macros,
            **link,
        )
    ]


extensions = cythonize(
    [codec_extension(name) for name in CODEC_MODULES] + libvpx_extensions(),
    compiler_directives=COMPILER_DIRECTIVES,
    # deploy/package.sh gives its cross-build a directory of its own.
    build_dir=os.environ.get("EXCAMERA_CYTHON_BUILD_DIR", "build/cython"),
)
for extension in extensions:
    # cythonize does not carry `optional` over from the Extension it was given.
    extension.optional = extension.name.startswith("shared.libvpx.")
setup(ext_modules=extensions)
