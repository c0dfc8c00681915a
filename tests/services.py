"""Real services the tests start for themselves on free ports: Redis and nginx (Debian packages the Makefile
installs), stopped when the test is done."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


# Ports for servers that must be told theirs, just below the kernel's ephemeral range: neither a bind to port 0
# (every test server that can pick its own) nor an outgoing connection is ever given one of these, so a port handed
# out here stays free until its server binds it. Each pytest-xdist worker draws from its own share.
_EPHEMERAL = _ephemeral_start()
PORTS = range(_EPHEMERAL - 12_000, _EPHEMERAL) if _EPHEMERAL > 13_024 else range(20_000, 32_000)
_handed_out: set[int] = set()
_draw = random.Random()


def free_port() -> int:
    """A TCP port free now on 127.0.0.1, that no other call in this test session has handed out or will (for
    servers that cannot be told to pick one themselves)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = len(PORTS) // max(workers, 1)
    start = PORTS.start + share * (int(worker) if worker.isdigit() else 0) % len(PORTS)
    for _ in range(1_000):
        port = start + _draw.randrange(share)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # another program's
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {start}-{start + share - 1}")


def program(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).is_file()), None)
    if path is None:
        pytest.fail(f"{name} is not installed: `make setup` installs the Debian packages the tests need")
    return path


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {port} within {timeout_s} s")


class RedisServer:
    """A redis-server on a free port, without persistence; :meth:`stop` and :meth:`start` again keep the port.
    ``options`` are more of redis-server's flags (``--requirepass``, ``--maxmemory``...)."""

    def __init__(self, folder: Path, options: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.port = free_port()
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [program("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.folder), "--loglevel", "warning", *self.options]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, "redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)  # as a crash: nothing is saved
            self.process.wait(10)
        self.process = None


@contextmanager
def redis_server(folder: Path, *options: str) -> Iterator[RedisServer]:
    server = RedisServer(folder, options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


LISTENING = re.compile(r"listening grpcs?=(\S+) wss?=(\S+) https?=(\S+)")


class Replica:
    """``antiphon serve`` in its own process on fixed ports (so it can be killed and started again on them)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.grpc_port, self.ws_port, self.http_port = free_port(), free_port(), free_port()
        self.args = args
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []

    def start(self, timeout_s: float = 60.0) -> None:
        ports = ["--grpc-port", str(self.grpc_port), "--ws-port", str(self.ws_port), "--http-port", str(self.http_port)]
        cmd = [sys.executable, "-m", "server.cli", "serve", *ports, *self.args]
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(self.env or {})}
        self.process = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, cwd=REPO)
        listening = threading.Event()
        threading.Thread(target=self._read_log, args=(self.process, listening), daemon=True).start()
        if not listening.wait(timeout_s) or self.process.poll() is not None:
            self.kill()
            raise RuntimeError("antiphon serve did not start:\n" + "".join(self.log[-30:]))

    def _read_log(self, process: subprocess.Popen[bytes], listening: threading.Event) -> None:
        assert process.stderr is not None
        for raw in process.stderr:  # drained to the end, so the server never blocks on a full pipe
            line = raw.decode(errors="replace")
            self.log.append(line)
            if LISTENING.search(line):
                listening.set()
        process.stderr.close()
        listening.set()  # the process ended

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is drained or saved."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


class Nginx:
    """nginx (the Debian package) with ``conf`` as its http block's content, in ``folder``, on free ports."""

    def __init__(self, folder: Path, conf: str, ports: list[int]) -> None:
        self.folder = folder
        self.ports = ports
        for sub in ("logs", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        temp = "\n".join(
            f"    {name}_temp_path tmp/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read and write the test's own folder
        (folder / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid nginx.pid;\nerror_log logs/error.log info;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{\n    access_log logs/access.log;\n{temp}\n{conf}\n}}\n",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        nginx = program("nginx")
        cmd = [nginx, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"), "-e", "logs/error.log"]
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejects its configuration:\n{check.stderr}")
        self.process = subprocess.Popen(
            [*cmd, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for port in self.ports:
            wait_for_port(port, self.process, "nginx")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def error_log(self) -> str:
        path = self.folder / "logs" / "error.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
