#!/usr/bin/env python3
"""Generate Chainfire's gRPC/protobuf Python modules from its etcd-compatible .proto files.

The protos live in ``src/plasmacloud/chainfire/proto`` and import each other as
``plasmacloud/chainfire/proto/<name>.proto``, so generating with ``src`` as the include
root yields ordinary absolute imports (``from plasmacloud.chainfire.proto import kv_pb2``)
and no import rewriting is needed. Output (``*_pb2.py``, ``*_pb2_grpc.py``, ``*_pb2.pyi``)
goes next to the protos and is gitignored; ``make protos`` runs this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PROTO_DIR = ROOT / "plasmacloud" / "chainfire" / "proto"


def main() -> int:
    """Run grpc_tools.protoc over every .proto file; return its exit status."""
    from grpc_tools import protoc  # dev dependency: only needed to build

    protos = sorted(str(p.relative_to(ROOT)) for p in PROTO_DIR.glob("*.proto"))
    if not protos:
        print(f"gen_protos: no .proto files in {PROTO_DIR}", file=sys.stderr)
        return 1
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *protos,
    ]
    rc = int(protoc.main(args))
    if rc != 0:
        print(f"gen_protos: protoc failed (exit {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
