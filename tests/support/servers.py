"""Real servers for the tests, chosen in this order (see README, "Testing"):

RabbitMQ: ``AMQP_URL`` if set; else a testcontainers RabbitMQ when Docker answers; else the
local broker on 127.0.0.1:5672. Each test run then gets its own vhost when ``rabbitmqctl``
can reach the broker, so runs never see each other's queues.

MongoDB: ``MONGODB_URL`` if set; else a testcontainers MongoDB started as a single-node
replica set (transactions need one) when Docker answers; else an embedded SecantusDB server
(``secantusd-py``, a Mongo-wire server with transactions) in a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- RabbitMQ --------------------------------------------------------------------------------
@dataclass
class Rabbit:
    """A reachable broker plus a way to run ``rabbitmqctl`` against it (or None)."""

    url: str
    ctl: list[str] | None

    def rabbitmqctl(self, *args: str) -> str:
        if self.ctl is None:
            raise RuntimeError("rabbitmqctl is not available for this broker")
        out = subprocess.run(
            [*self.ctl, *args], capture_output=True, text=True, timeout=60, check=True
        )
        return out.stdout

    def with_vhost(self, vhost: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))

    @contextlib.contextmanager
    def fresh_vhost(self, prefix: str = "eventshop-test") -> Iterator[str]:
        """A new vhost for the block, deleted afterwards; yields its AMQP URL. Without
        rabbitmqctl, yields the broker's own URL (tests then use unique queue names)."""
        if self.ctl is None:
            yield self.url
            return
        vhost = f"{prefix}-{uuid.uuid4().hex[:10]}"
        user = urlsplit(self.url).username or "guest"
        self.rabbitmqctl("add_vhost", vhost)
        self.rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        try:
            yield self.with_vhost(vhost)
        finally:
            with contextlib.suppress(Exception):
                self.rabbitmqctl("delete_vhost", vhost)


def _local_ctl() -> list[str] | None:
    return ["rabbitmqctl"] if shutil.which("rabbitmqctl") else None


@contextlib.contextmanager
def rabbitmq() -> Iterator[Rabbit]:
    url = os.environ.get("AMQP_URL")
    if url:
        host = urlsplit(url).hostname or "localhost"
        local = host in ("localhost", "127.0.0.1", "::1")
        yield Rabbit(url, _local_ctl() if local else None)
        return
    if docker_available():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            ctl = ["docker", "exec", container.get_wrapped_container().id, "rabbitmqctl"]
            yield Rabbit(f"amqp://guest:guest@{host}:{port}/", ctl)
        return
    yield Rabbit("amqp://guest:guest@127.0.0.1:5672/", _local_ctl())


# -- MongoDB wire -----------------------------------------------------------------------------
@contextlib.contextmanager
def mongodb() -> Iterator[str]:
    url = os.environ.get("MONGODB_URL")
    if url:
        yield url
        return
    if docker_available():
        with _mongo_container() as url:
            yield url
        return
    with secantus() as url:
        yield url


@contextlib.contextmanager
def _mongo_container() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    container = DockerContainer("mongo:7").with_exposed_ports(27017)
    container = container.with_command("--replSet rs0 --bind_ip_all")
    with container:
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(27017))
        wait_for_port(host, port)
        deadline = time.monotonic() + 60
        while True:
            result = container.exec(
                [
                    "mongosh",
                    "--quiet",
                    "--eval",
                    "try { rs.status().ok } catch (e) { rs.initiate().ok }",
                ]
            )
            if result.exit_code == 0 and b"1" in result.output:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica set did not initiate: {result.output!r}")
            time.sleep(0.5)
        yield f"mongodb://{host}:{port}/?directConnection=true"


@contextlib.contextmanager
def secantus(storage: Path | None = None) -> Iterator[str]:
    """Run ``secantusd-py`` as a child process on a free port."""
    port = free_port()
    tmp = None
    if storage is None:
        tmp = tempfile.mkdtemp(prefix="secantus-")
        storage = Path(tmp)
    exe = Path(sys.executable).with_name("secantusd-py")
    log = open(storage.parent / f"secantus-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(exe), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(storage)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
