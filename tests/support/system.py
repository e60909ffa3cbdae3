"""The whole system as real processes: each service started with ``python -m <service>``
exactly as a user (or the Procfile) starts it, against the test's broker vhost, a real
Mongo-wire server and a real SMTP server. Logs go to one file per service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.poll import eventually
from tests.support.servers import free_port

SERVICES = ("users", "orders", "payments", "notifier", "analytics", "recommender")
WORKERS = ("payments", "notifier", "analytics", "recommender")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class System:
    amqp_url: str
    mongodb_url: str
    smtp_port: int
    logdir: Path
    db_prefix: str
    retry_delays: str = "0.3 0.6 1.2"
    extra_env: dict[str, str] = field(default_factory=dict)
    users_port: int = field(default_factory=free_port)
    orders_port: int = field(default_factory=free_port)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _starts: dict[str, int] = field(default_factory=dict)

    @property
    def users_url(self) -> str:
        return f"http://127.0.0.1:{self.users_port}"

    @property
    def orders_url(self) -> str:
        return f"http://127.0.0.1:{self.orders_port}"

    def env(self, service: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AMQP_", "MONGODB_", "SMTP_"))
        }
        if service not in self.metrics_ports:
            self.metrics_ports[service] = free_port()
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
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "INFO",
                "RETRY_DELAYS": self.retry_delays,
                "OUTBOX_POLL_SECONDS": "0.5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if service in WORKERS:
            env["METRICS_PORT"] = str(self.metrics_ports[service])
        env.update(self.extra_env)
        return env

    def start(self, services: Iterable[str] = SERVICES) -> None:
        for service in services:
            self._starts[service] = self._starts.get(service, 0) + 1
            log = open(self.log_path(service), "ab")  # noqa: SIM115 - owned by the child
            self.procs[service] = subprocess.Popen(
                [sys.executable, "-m", service],
                cwd=ROOT,
                env=self.env(service),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()

    def log_path(self, service: str) -> Path:
        return self.logdir / f"{service}.log"

    def log_lines(self, service: str) -> list[dict[str, Any]]:
        out = []
        path = self.log_path(service)
        if not path.exists():
            return out
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def send_signal(self, service: str, sig: int) -> None:
        self.procs[service].send_signal(sig)

    def stop(self, service: str, *, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        proc = self.procs[service]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self, service: str) -> None:
        self.stop(service, sig=signal.SIGKILL)

    def stop_all(self) -> dict[str, int]:
        return {name: self.stop(name) for name in list(self.procs)}

    async def ready(self, services: Iterable[str] = SERVICES, timeout: float = 60) -> None:
        """Wait until every service answers its readiness probe."""
        urls = {
            name: (
                f"{self.users_url}/health/ready"
                if name == "users"
                else f"{self.orders_url}/health/ready"
                if name == "orders"
                else f"http://127.0.0.1:{self.metrics_ports[name]}/health/ready"
            )
            for name in services
        }
        async with httpx.AsyncClient(timeout=2) as client:
            for name, url in urls.items():

                async def probe(name: str = name, url: str = url) -> bool:
                    proc = self.procs[name]
                    if proc.poll() is not None:
                        tail = self.log_path(name).read_text(errors="replace")[-3000:]
                        raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")
                    try:
                        return (await client.get(url)).status_code == 200
                    except httpx.HTTPError:
                        return False

                await eventually(probe, timeout=timeout, interval=0.2, what=f"{name} ready")


async def register_and_login(
    client: httpx.AsyncClient, users_url: str, username: str, password: str = "correct horse 1"
) -> tuple[dict[str, Any], str]:
    response = await client.post(
        f"{users_url}/users",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert response.status_code == 201, response.text
    token = await client.post(
        f"{users_url}/auth/token", data={"username": username, "password": password}
    )
    assert token.status_code == 200, token.text
    return response.json(), token.json()["access_token"]


async def wait_status(
    client: httpx.AsyncClient,
    orders_url: str,
    token: str,
    order_id: str,
    status: str,
    timeout: float = 30,
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(
            f"{orders_url}/orders/{order_id}", headers={"Authorization": f"Bearer {token}"}
        )
        body = r.json()
        return body if r.status_code == 200 and body["status"] == status else None

    result = await eventually(probe, timeout=timeout, interval=0.2, what=f"order {status}")
    assert result is not None
    return result


async def gather_limited(coros: Iterable[Any], limit: int = 10) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def run(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))
