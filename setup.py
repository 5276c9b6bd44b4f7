"""The one part of the build that pyproject.toml cannot declare yet without a warning (its
ext-modules table is experimental in setuptools): the parts in C, the relay's native thread
(see tapveth/daemon/native.py) and the vxlan end's segmenting and merging of TCP (see
tapveth/core/offload.py). install.sh installs gcc and python3-dev for them."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tapveth.daemon._native_relay",
            sources=["tapveth/daemon/_native_relay.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(
            "tapveth.core._offload",
            sources=["tapveth/core/_offload.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ]
)
