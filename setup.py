"""Build the Cython extensions of the codec; everything else is in pyproject.toml."""

import os

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
        extra_compile_args=["-O3", "-Wno-unused-function", "-Wno-unreachable-code"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )


setup(
    ext_modules=cythonize(
        [codec_extension(name) for name in CODEC_MODULES],
        compiler_directives=COMPILER_DIRECTIVES,
        build_dir="build/cython",
    )
)
