"""Builds the optional compiled kernels; everything else is configured in pyproject.toml.

When no C compiler is available the build goes on without them, and winspect uses its
numpy implementation of the same loops (``inspector.analysis.kernels``,
``inspector.loaders.dequant``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "inspector.analysis._kernels",
            sources=["inspector/analysis/_kernels.c"],
            depends=["inspector/analysis/_reduce.h"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "inspector.loaders._dequant",
            sources=["inspector/loaders/_dequant.c"],
            # no fused multiply-add: values must round as the reference dequantization rounds them
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        ),
    ]
)
