"""End-to-end fixtures: a fresh vhost, database prefix and SMTP server per test, and the
six services started as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.smtp import SmtpServer
from tests.support.system import System


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def system(
    amqp_url: str,
    mongodb_url: str,
    db_prefix: str,
    smtp: SmtpServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[System]:
    """Not started: each test starts what it needs (``system.start()`` for all six)."""
    sys_ = System(
        amqp_url=amqp_url,
        mongodb_url=mongodb_url,
        smtp_port=smtp.port,
        logdir=tmp_path,
        db_prefix=db_prefix,
    )
    yield sys_
    codes = sys_.stop_all()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for name in sys_.procs:
            tail = sys_.log_path(name).read_text(errors="replace")[-2000:]
            print(f"--- {name} (exit {codes.get(name)}) ---\n{tail}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
