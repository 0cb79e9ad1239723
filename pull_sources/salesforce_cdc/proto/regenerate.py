"""Regenerate the stubs from pubsub_api.proto.

One command: `python -m pull_sources.salesforce_cdc.proto.regenerate`.

The generated `pubsub_api_pb2*.py` files are committed, so a fresh machine needs no protoc
step; run this (needs the `proto` extra: grpcio-tools) only after editing the .proto. protoc
runs from the repository root so the generated gRPC module imports its message module by
its full package path.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PROTO = HERE.relative_to(ROOT) / "pubsub_api.proto"


def main() -> int:
    from grpc_tools import protoc  # the `proto` extra

    argv = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        str(PROTO),
    ]
    code = int(protoc.main(argv))
    if code == 0:
        print(f"regenerated stubs for {PROTO}")
    return code


if __name__ == "__main__":
    sys.exit(main())
