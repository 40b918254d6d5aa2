"""Builds the optional compiled kernels; everything else is configured in pyproject.toml.

When no C compiler is available the build goes on without them, and winspect uses its
numpy implementation of the same loops (``inspector.analysis.kernels``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "inspector.analysis._kernels",
            sources=["inspector/analysis/_kernels.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
