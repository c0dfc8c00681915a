"""benchmarks/soak.py against a real ``antiphon serve`` with the tiny text model, for seconds instead of minutes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from benchmarks import soak

TRANSPORTS = ("grpc", "ws", "http")
# No audio model and no classifier on the tiny server (the committed image generators are served, as by default):
# the audio and classify scenarios do not run.
SCENARIOS = ("generate", "chat", "cancel", "disconnect", "slow", "malformed", "image")


@pytest.mark.slow
def test_a_short_soak_passes_and_runs_every_scenario(tiny_text_checkpoint: Path, tmp_path: Path) -> None:
    """Twenty seconds of 12 streams pass (no INTERNAL, traceback, ERROR line or unexpected answer, memory within 5%,
    a clean exit), with requests of every scenario over every transport."""
    out = tmp_path / "soak.json"
    server_args = (
        f"--text-checkpoint {shlex.quote(str(tiny_text_checkpoint))} --audio-checkpoint none --classifiers none "
        "--torch-threads 1 --text-threads 1"
    )
    code = soak.main(["--minutes", "0.33", "--streams", "12", "--json", str(out), "--server-args", server_args])
    report = json.loads(out.read_text())
    assert code == 0, soak.format_report(report)
    assert report["pass"] is True
    ran = {(t, s) for s, row in report["requests_by_scenario"].items() for t, n in row.items() if n > 0}
    assert ran == {(t, s) for t in TRANSPORTS for s in SCENARIOS}
    assert {"completed", "cancelled", "disconnected", "refused"} <= report["results"].keys()
    assert report["server_exit"]["code"] == 0
