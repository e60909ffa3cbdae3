"""What the benchmarks need to run eventshop for real: a SecantusDB server, a fresh RabbitMQ
vhost, the services as ``python -m <service>`` processes, an SMTP sink, and the CPU time
of a process from /proc. A small copy of what tests/support does (bench never imports
tests)."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "bench-results"
SERVICES = ("users", "orders", "payments", "notifier", "analytics", "recommender")
HTTP_SERVICES = ("users", "orders")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")" that ends the command name, utime and stime are fields 12 and 13.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine() -> dict[str, Any]:
    """What a reader needs to compare figures: cores, CPU model, memory, load right now."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save_json(name: str, data: dict[str, Any]) -> Path:
    path = RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# -- dependencies ------------------------------------------------------------------------------
@contextlib.contextmanager
def secantus(workdir: Path) -> Iterator[tuple[str, int]]:
    """A SecantusDB server (Mongo wire protocol, transactions) on a free port; yields its
    URL and pid."""
    port = free_port()
    storage = workdir / "secantus"
    exe = Path(sys.executable).with_name("secantusd-py")
    with open(workdir / "secantus.log", "wb") as log:
        proc = subprocess.Popen(
            [str(exe), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port)
        # SecantusDB keeps a record of every retryable write for 30 minutes, at most
        # 10,000; past that cap each new one sorts the whole table under a global lock
        # (secantus/transactions.py, _prune_retryable_locked) and the server slows down
        # ~50x: the 10k-order run collapsed after ~3k orders. Transactions do not need
        # retryable writes, and on localhost a benchmark has no network blips to retry.
        yield f"mongodb://127.0.0.1:{port}/?retryWrites=false", proc.pid
    finally:
        _stop(proc)


@contextlib.contextmanager
def vhost(prefix: str = "eventshop-bench") -> Iterator[str]:
    """A fresh RabbitMQ vhost on the local broker (deleted afterwards); yields its URL."""
    if shutil.which("rabbitmqctl") is None:
        raise SystemExit("rabbitmqctl not found: the benchmarks need a local RabbitMQ")
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    user = urlsplit(AMQP_URL).username or "guest"
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    try:
        yield urlunsplit(urlsplit(AMQP_URL)._replace(path="/" + quote(name, safe="")))
    finally:
        with contextlib.suppress(Exception):
            _ctl("delete_vhost", name)


def _ctl(*args: str) -> str:
    out = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def queue_depths(amqp_url: str) -> dict[str, int]:
    """Ready + unacknowledged messages per queue of the vhost in ``amqp_url``."""
    name = urlsplit(amqp_url).path.lstrip("/") or "/"
    out = _ctl(
        "list_queues", "-q", "-p", name, "--no-table-headers",
        "name", "messages_ready", "messages_unacknowledged",
    )  # fmt: skip
    depths = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            depths[parts[0]] = int(parts[1]) + int(parts[2])
    return depths


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# -- the services ------------------------------------------------------------------------------
@dataclass
class Services:
    """eventshop's services as real processes, configured only through the environment."""

    amqp_url: str
    mongodb_url: str
    logdir: Path
    smtp_port: int = 1025
    extra_env: dict[str, str] = field(default_factory=dict)
    #: per-service overrides, "*" for all: {"recommender": {"PREFETCH": "1"}}
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    users_port: int = field(default_factory=free_port)
    orders_port: int = field(default_factory=free_port)
    db_prefix: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:6]}_")
    metrics_ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: the source tree the services run from: this checkout, or another commit's copy
    #: (``git worktree add``) to compare two versions in one run
    tree: Path = ROOT

    @property
    def users_url(self) -> str:
        return f"http://127.0.0.1:{self.users_port}"

    @property
    def orders_url(self) -> str:
        return f"http://127.0.0.1:{self.orders_port}"

    def env(self, service: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AMQP_", "MONGODB_", "SMTP_", "LOG_", "OTEL_"))
        }
        env.update(
            {
                "AMQP_URL": self.amqp_url,
                "MONGODB_URL": self.mongodb_url,
                "MONGODB_DB_PREFIX": self.db_prefix,
                "USERS_PORT": str(self.users_port),
                "ORDERS_PORT": str(self.orders_port),
                "USERS_URL": self.users_url,
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(self.smtp_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if service not in HTTP_SERVICES:
            self.metrics_ports.setdefault(service, free_port())
            env["METRICS_PORT"] = str(self.metrics_ports[service])
        env.update(self.extra_env)
        env.update(self.service_env.get("*", {}))
        env.update(self.service_env.get(service, {}))
        return env

    def start(self, services: Iterable[str] = SERVICES, *, module: str | None = None) -> None:
        for service in services:
            with open(self.logdir / f"{service}.log", "ab") as log:
                self.procs[service] = subprocess.Popen(
                    [sys.executable, "-m", module or service],
                    cwd=self.tree,
                    env=self.env(service),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    def ready_url(self, service: str) -> str:
        if service == "users":
            return f"{self.users_url}/health/ready"
        if service == "orders":
            return f"{self.orders_url}/health/ready"
        return f"http://127.0.0.1:{self.metrics_ports[service]}/health/ready"

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            for name, proc in self.procs.items():
                while True:
                    if proc.poll() is not None:
                        tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-3000:]
                        raise SystemExit(f"{name} exited with {proc.returncode}:\n{tail}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(self.ready_url(name)).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{name} not ready after {timeout}s; see {self.logdir}")
                    time.sleep(0.2)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(proc.pid) for name, proc in self.procs.items()}

    def stop_all(self) -> dict[str, int]:
        return {name: _stop(proc) for name, proc in self.procs.items()}


def missing_services(services: Iterable[str] = SERVICES, tree: Path = ROOT) -> list[str]:
    return [s for s in services if not (tree / s / "__main__.py").exists()]


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="eventshop-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# -- accounts ----------------------------------------------------------------------------------
def register(users_url: str, username: str, password: str = "bench-password-1") -> str:
    """Register a user and log in; returns an access token."""
    with httpx.Client(timeout=30) as client:
        created = client.post(
            f"{users_url}/users",
            json={"username": username, "email": f"{username}@example.com", "password": password},
        )
        if created.status_code != 201:
            raise SystemExit(f"registering {username} failed: {created.status_code} {created.text}")
        token = client.post(
            f"{users_url}/auth/token", data={"username": username, "password": password}
        )
        if token.status_code != 200:
            raise SystemExit(f"login of {username} failed: {token.status_code} {token.text}")
        return str(token.json()["access_token"])


# -- mail --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mail:
    at: float  # time.time() when the DATA command completed
    to: str
    subject: str


class SmtpSink:
    """An aiosmtpd server (in its own thread) that timestamps every message it receives
    and keeps only its headers (the benchmarks match mails to orders by subject)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self._parser = email.parser.BytesHeaderParser(policy=email.policy.default)
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        at = time.time()
        headers = self._parser.parsebytes(envelope.content)
        mail = Mail(at, str(headers["To"]), str(headers["Subject"]))
        with self._lock:
            self.mails.append(mail)
        return "250 OK"

    def snapshot(self) -> list[Mail]:
        with self._lock:
            return list(self.mails)

    def __enter__(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._controller is not None:
            self._controller.stop()
