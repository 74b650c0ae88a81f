"""Build hook: every sdist and wheel carries Chainfire's generated gRPC stubs.

The stubs (``*_pb2*.py``) are gitignored and generated from the .proto files by
``scripts/gen_protos.py``; without this hook ``pip wheel .`` from a clean clone would
package a ``plasma`` that fails on ``import rpc_pb2``. Everything else about the
package is declared in pyproject.toml; grpcio-tools comes from its build-system table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def _generate(out_root: Path) -> None:
    # scripts/ is no package: load the one generator `make protos` also runs
    spec = importlib.util.spec_from_file_location("gen_protos", HERE / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    gen_protos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_protos)
    if gen_protos.generate(HERE / "src", out_root) != 0:
        raise RuntimeError("generating the gRPC stubs failed (see protoc's message above)")


class BuildPyWithStubs(build_py):
    """Generate the stubs into the wheel's tree (an editable install: into src/, where
    the editable finder looks, as `make protos` does)."""

    def run(self) -> None:
        super().run()
        _generate(HERE / "src" if self.editable_mode else Path(self.build_lib))


class SdistWithStubs(sdist):
    """The sdist carries the .proto files (package data) and freshly generated stubs;
    stubs lying in a developer's src/ are left out by MANIFEST.in, so an sdist from a
    clean clone and one from a working tree hold the same files."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        _generate(Path(base_dir) / "src")


setup(cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithStubs})
