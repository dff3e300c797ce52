"""Only the optional C extension lives here; everything else is in pyproject.toml.

``optional=True``: where no C compiler is found the build prints a warning and installs without it, and
oanet falls back to numpy and pyspng/Pillow (same results, slower).
"""

import sys

from setuptools import Extension, setup

extra_compile_args = [] if sys.platform == "win32" else ["-O3"]

setup(
    ext_modules=[
        Extension(
            "oanet._ext._speedups",
            sources=["oanet/_ext/speedups.c"],
            extra_compile_args=extra_compile_args,
            optional=True,
        )
    ]
)
