"""The test services' port choice: a port handed out is never handed out again, nor taken by the kernel meanwhile."""

from __future__ import annotations

import socket

import pytest

from tests.services import PORTS, free_port


def test_free_ports_are_distinct_and_in_the_workers_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each xdist worker draws from its own share of PORTS, and no port twice: three servers of one replica (or two
    workers' servers) can never be handed one port between the choice and the bind."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    half = PORTS.start + len(PORTS) // 2
    assert all(half <= port < PORTS.stop for port in ports)


def test_port_0_is_never_one_of_them() -> None:
    """The ports lie below the kernel's ephemeral range, from which port 0 and outgoing connections are drawn."""
    for _ in range(20):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            assert sock.getsockname()[1] not in PORTS
