"""Generate the Python gRPC code from proto/fluxrig/v1/*.proto into proto/gen/ (or OUT).

    python proto/generate.py [OUT]

The generated tree is committed and installed as the import package `fluxrig.v1`; a test
regenerates it into a temporary folder and fails when the committed code is stale
(run `make proto`). grpcio-tools is pinned in the dev extra: generated code embeds its version.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
SOURCES = sorted((HERE / "fluxrig" / "v1").glob("*.proto"))


def generate(out: Path) -> None:
    target = out / "fluxrig" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("*_pb2*.py*"):
        stale.unlink()
    well_known = str(files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{HERE}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p.relative_to(HERE)) for p in SOURCES),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / "fluxrig" / "__init__.py").write_text('"""Generated gRPC code (see proto/)."""\n')
    (target / "__init__.py").write_text('"""fluxrig API v1 (generated from proto/fluxrig/v1)."""\n')


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "gen")
