"""deploy/antiphon.service, read as systemd reads it: its settings are the server's, it stops as the server drains,
it does not restart a server that refused its settings, and its sandbox leaves writable what the server writes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from server.settings import ServeSettings, stray_variables

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "antiphon.service"
CLOSING_S = 5  # after the grace period: WebSocket closing handshakes (2 s), the listeners and gRPC (3 s)


def directives(text: str | None = None) -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit (comments skipped), the values of a key in order."""
    found: dict[str, list[str]] = {}
    for line in (text if text is not None else UNIT.read_text(encoding="utf-8")).splitlines():
        if line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def unit_environment() -> dict[str, str]:
    """The variables the unit's ``Environment=`` lines set."""
    return dict(value.split("=", 1) for value in directives().get("Environment", []))


def seconds(value: str) -> float:
    """A systemd time span in seconds ("30", "30s", "1min 30s")."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value))


def test_every_variable_is_a_setting_the_server_accepts() -> None:
    """The unit's ANTIPHON_* variables, the commented examples too, are settings of serve, and their values pass."""
    text = UNIT.read_text(encoding="utf-8")
    examples = {m[1]: m[2] for m in re.finditer(r"^#Environment=(ANTIPHON_\w+)=(\S+)", text, re.M)}
    assert stray_variables({**examples, **unit_environment()}) == []
    settings = ServeSettings.from_sources(environ=unit_environment())
    assert settings.host == "127.0.0.1"


def test_the_server_behind_nginx_answers_requests_for_the_site() -> None:
    """The server listens on loopback behind deploy/nginx.conf, which passes the site's Host on: the unit names the
    site's origin in --cors-origins, or the server refuses every request for that name."""
    nginx = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    site = re.search(r"server_name\s+(\S+);", nginx)
    assert site is not None
    settings = ServeSettings.from_sources(environ=unit_environment())
    assert f"https://{site.group(1)}" in settings.cors_origins


def test_systemd_waits_for_the_drain() -> None:
    """TimeoutStopSec covers the grace period and the closing after it: systemd does not SIGKILL a draining server."""
    unit = directives()
    grace = ServeSettings.from_sources(environ=unit_environment()).grace_s
    assert seconds(unit["TimeoutStopSec"][-1]) >= grace + CLOSING_S
    assert unit["KillSignal"] == ["SIGTERM"]


def test_sigterm_goes_to_the_server_alone() -> None:
    """KillMode=mixed: the espeak-ng processes a draining server still runs for speech are not killed under it."""
    assert directives()["KillMode"] == ["mixed"]


def test_a_refused_setting_is_not_restarted_in_a_loop() -> None:
    """Exit 2 (a setting the server refused) is not restarted; other failures are."""
    unit = directives()
    assert unit["Restart"] == ["on-failure"]
    assert "2" in " ".join(unit.get("RestartPreventExitStatus", [])).split()


def test_connections_are_not_capped_at_a_thousand() -> None:
    """LimitNOFILE lifts systemd's soft limit of 1024 descriptors, each client connection being one."""
    assert int(directives()["LimitNOFILE"][-1].split(":")[0]) >= 65536


def test_what_the_server_writes_is_writable_in_the_sandbox() -> None:
    """Under ProtectSystem=strict only the CacheDirectory is writable: the data cache and numba's compiled steps go
    there, and nothing forbids the executable memory numba's compiler needs."""
    unit = directives()
    assert unit["ProtectSystem"] == ["strict"]
    cache = Path("/var/cache") / unit["CacheDirectory"][0]
    env = unit_environment()
    for name in ("ANTIPHON_CACHE", "NUMBA_CACHE_DIR"):
        assert Path(env[name]).is_relative_to(cache), name
    assert directives().get("MemoryDenyWriteExecute", ["no"]) == ["no"]


def test_systemd_analyze_verify_finds_nothing_but_the_missing_install(tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds no error in the unit; it only misses the program, installed on the target."""
    program = shutil.which("systemd-analyze")
    if program is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "antiphon.service"
    shutil.copy(UNIT, copy)
    result = subprocess.run([program, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False)
    # Lines about the system's own units (a container's, say) are not this unit's business.
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "antiphon.service" in line]
    assert [line for line in lines if "/opt/antiphon/.venv/bin/antiphon" not in line] == []
