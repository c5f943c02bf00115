"""Build of the optional C accelerator; everything else is declared in pyproject.toml.

`gateway.lineprotocol._speedups` speeds up line protocol validation. It is optional: where there
is no C compiler (or no Python headers) setuptools prints a warning and installs the package
without it, and the pure-Python implementation is used (see gateway/lineprotocol/implementation.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gateway.lineprotocol._speedups",
            ["gateway/lineprotocol/_speedups.c"],
            optional=True,
        )
    ]
)
