"""Generate the Python stubs of the wire contract: ``python proto/generate.py [--out DIR]``.

Writes ``antiphon/v1/*_pb2.py`` and ``*_pb2.pyi`` for every ``.proto`` file, and ``generation_pb2_grpc.py`` for the
service, beside the protos (or under ``--out``). The stubs are committed and never edited by hand; a test
regenerates them and fails when they differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PACKAGE = Path("antiphon") / "v1"
SERVICES = ("generation.proto",)


def proto_files() -> list[Path]:
    return sorted((ROOT / PACKAGE).glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc into ``out``; returns the generated files."""
    (out / PACKAGE).mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    sources = [str(p.relative_to(ROOT)) for p in proto_files()]
    services = [s for s in sources if Path(s).name in SERVICES]
    base = ["grpc_tools.protoc", f"-I{ROOT}", f"-I{include}"]
    if protoc.main([*base, f"--python_out={out}", f"--pyi_out={out}", *sources]) != 0:
        raise RuntimeError("protoc failed on the messages")
    if protoc.main([*base, f"--grpc_python_out={out}", *services]) != 0:
        raise RuntimeError("protoc failed on the services")
    return sorted(p for p in (out / PACKAGE).iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root folder of the generated package")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
