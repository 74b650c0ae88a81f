"""Build hook: every build (wheel, sdist, `pip install .`) generates Chainfire's gRPC stubs.

The stubs are generated files (gitignored), so a build from a clean clone must make them
itself or the wheel's `plasma` fails on `import rpc_pb2`. The generation is the one in
``scripts/gen_protos.py`` (also `make protos`); grpcio-tools is a build requirement.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

sys.path.insert(0, str(Path(__file__).resolve().parent / "scripts"))
from gen_protos import main as gen_protos


def _generate() -> None:
    if gen_protos() != 0:
        raise SystemExit("generating the gRPC stubs failed (scripts/gen_protos.py)")


class BuildPyWithStubs(build_py):
    """build_py that generates the stubs first, so they are found as package modules."""

    def run(self) -> None:
        _generate()
        super().run()


class SdistWithStubs(sdist):
    """An sdist that carries the generated stubs too (the .proto files and the generator
    travel with it as well, so a wheel built from it regenerates them the same way)."""

    def run(self) -> None:
        _generate()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithStubs})
