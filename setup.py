"""The one part of the build that pyproject.toml cannot declare yet without a warning (its
ext-modules table is experimental in setuptools): the relay's native thread, in C (see
tapveth/daemon/native.py). install.sh installs gcc and python3-dev for it."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tapveth.daemon._native_relay",
            sources=["tapveth/daemon/_native_relay.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
