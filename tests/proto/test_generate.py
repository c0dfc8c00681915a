"""The committed stubs are exactly what proto/generate.py makes from the .proto files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "proto"


def _load_generator():  # proto/ is a folder of files, not a package
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("proto_generate", module)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    """Regenerating into a temporary folder gives byte-identical files, and no committed stub is stale."""
    fresh = _load_generator().generate(tmp_path)
    committed = ROOT / "antiphon" / "v1"
    stubs = sorted(p.name for p in committed.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")))
    assert stubs == [p.name for p in fresh], "run `python proto/generate.py` and commit the result"
    for path in fresh:
        assert path.read_bytes() == (committed / path.name).read_bytes(), f"{path.name} is stale: run proto/generate.py"


def test_stubs_import_as_antiphon_v1() -> None:
    """The generated package imports as antiphon.v1 and describes the Generation service."""
    from antiphon.v1 import generation_pb2

    methods = [m.name for m in generation_pb2.DESCRIPTOR.services_by_name["Generation"].methods]
    assert methods == ["ListModels", "GenerateText", "Chat", "GenerateAudio", "Classify", "GenerateImage"]
