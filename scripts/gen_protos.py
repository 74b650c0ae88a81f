#!/usr/bin/env python3
"""Generate Chainfire's gRPC/protobuf Python modules from its etcd-compatible .proto files.

The protos live in ``src/plasmacloud/chainfire/proto`` and import each other as
``plasmacloud/chainfire/proto/<name>.proto``, so generating with ``src`` as the include
root yields ordinary absolute imports (``from plasmacloud.chainfire.proto import kv_pb2``)
and no import rewriting is needed. Output (``*_pb2.py``, ``*_pb2_grpc.py``, ``*_pb2.pyi``)
goes next to the protos and is gitignored; ``make protos`` runs this script, and
``setup.py``'s build hook calls :func:`generate` so every sdist and wheel carries them.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PROTO_PACKAGE = Path("plasmacloud", "chainfire", "proto")


def generate(src_root: Path = ROOT, out_root: Path = ROOT) -> int:
    """Run grpc_tools.protoc over every .proto under ``src_root``, writing the modules
    under ``out_root`` (same package layout); return protoc's exit status."""
    from grpc_tools import protoc  # build dependency (pyproject's build-system, dev extras)

    proto_dir = src_root / PROTO_PACKAGE
    protos = sorted(str(p.relative_to(src_root)) for p in proto_dir.glob("*.proto"))
    if not protos:
        print(f"gen_protos: no .proto files in {proto_dir}", file=sys.stderr)
        return 1
    (out_root / PROTO_PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{src_root}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    rc = int(protoc.main(args))
    if rc != 0:
        print(f"gen_protos: protoc failed (exit {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(generate())
