"""``python -m events dlq`` against the real broker: a message that fails in a real
Consumer is parked, the operator lists, shows, replays or purges it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from events.bus import BadMessage, Broker, Consumer, current_delivery
from events.contracts import CloudEvent, UserRegistered
from events.dlq import DeadLetters
from tests.conftest import TEST_RETRY_DELAYS
from tests.support.helpers import publish_event, publish_raw, queue_messages, run_cli
from tests.support.poll import eventually, stays

REPO = Path(__file__).resolve().parents[2]
SERVICE = "notifier"  # a real service name: each test has its own vhost


def user(n: int) -> UserRegistered:
    return UserRegistered(user_id=f"u{n}", username=f"user{n}", email=f"user{n}@example.com")


class Welcomer:
    """A notifier-like handler that fails while ``broken`` and records what it handled."""

    def __init__(self, error: type[Exception] = RuntimeError) -> None:
        self.broken = True
        self.error = error
        self.handled: list[tuple[str, int, str]] = []

    async def __call__(self, event: UserRegistered, ctx: Any) -> None:
        delivery = current_delivery()
        assert delivery is not None
        if self.broken:
            raise self.error("smtp is down")
        self.handled.append((delivery.event_id, delivery.attempt, delivery.routing_key))


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, amqp_url: str) -> str:
    monkeypatch.setenv("AMQP_URL", amqp_url)
    return amqp_url


async def parked_count(url: str) -> int:
    return len(await queue_messages(url, f"{SERVICE}.dlq"))


async def park(broker: Broker, url: str, welcomer: Welcomer, *events: UserRegistered) -> Consumer:
    consumer = Consumer(
        broker, SERVICE, {UserRegistered: welcomer}, None, retry_delays=TEST_RETRY_DELAYS
    )
    await consumer.start()
    for event in events:
        await publish_event(url, event)

    async def all_parked() -> bool:
        return await parked_count(url) == len(events)

    await eventually(all_parked, timeout=30, what=f"{len(events)} parked")
    return consumer


async def test_failed_message_is_listed_shown_then_replayed_and_handled_once(
    broker: Broker, cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a handler that fails every attempt, so the event ends in the DLQ after retries
    welcomer = Welcomer()
    envelope = CloudEvent.wrap(user(1), source="/users", correlationid="corr-7")
    consumer = Consumer(
        broker, SERVICE, {UserRegistered: welcomer}, None, retry_delays=TEST_RETRY_DELAYS
    )
    await consumer.start()
    await publish_event(cli_env, user(1), event_id=envelope.id, correlationid="corr-7")
    await eventually(lambda: parked_count(cli_env), timeout=30, what="parked")

    # when the operator lists the DLQs
    code, out, _ = await run_cli(capsys, "dlq", "list", "--json")
    assert code == 0
    rows = {row["service"]: row for row in json.loads(out)}
    # then every consumer's DLQ is reported, ours with one message and its reason
    assert rows[SERVICE]["messages"] == 1
    assert rows[SERVICE]["first"][0]["error"] == "RuntimeError: smtp is down"
    assert rows["payments"]["messages"] is None  # never declared on this vhost

    code, out, _ = await run_cli(capsys, "dlq", "list", SERVICE)
    assert code == 0
    assert f"{SERVICE}.dlq  1" in out
    assert "RuntimeError: smtp is down" in out

    # when they look at it
    code, out, _ = await run_cli(capsys, "dlq", "show", SERVICE, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["messages"] == 1
    [parked] = shown["shown"]
    assert parked["id"] == envelope.id
    assert parked["type"] == "UserRegistered"
    assert parked["routing_key"] == "user.registered"
    assert parked["attempts"] == 1 + len(TEST_RETRY_DELAYS)
    assert parked["error"] == "RuntimeError: smtp is down"
    assert parked["failed_at"].endswith("Z")
    assert parked["correlation_id"] == "corr-7"
    code, out, _ = await run_cli(capsys, "dlq", "show", SERVICE)
    assert envelope.id in out and "attempts 4" in out and "smtp is down" in out
    # then looking consumed nothing
    assert await parked_count(cli_env) == 1

    # when the handler is fixed and the operator replays everything
    welcomer.broken = False
    code, out, _ = await run_cli(capsys, "dlq", "replay", SERVICE, "--all")
    assert code == 0
    assert f"replayed 1 message(s) from {SERVICE}.dlq to {SERVICE}" in out

    # then it is handled exactly once, as a first attempt, with its original routing key
    async def handled() -> list[tuple[str, int, str]]:
        return welcomer.handled

    await eventually(handled, what="replayed message handled")
    await stays(lambda: _is(len(welcomer.handled) == 1), seconds=sum(TEST_RETRY_DELAYS))
    assert welcomer.handled == [(envelope.id, 1, "user.registered")]
    assert await parked_count(cli_env) == 0
    assert await queue_messages(cli_env, SERVICE) == []
    await consumer.stop()


async def test_replay_by_id_moves_only_that_message(
    broker: Broker, cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given three parked events (BadMessage parks at once)
    welcomer = Welcomer(BadMessage)
    consumer = await park(broker, cli_env, welcomer, user(1), user(2), user(3))
    ids = [m.message_id for m in await queue_messages(cli_env, f"{SERVICE}.dlq")]
    assert len(set(ids)) == 3
    target = ids[1]
    welcomer.broken = False

    # when one of them is replayed by id
    code, out, _ = await run_cli(capsys, "dlq", "replay", SERVICE, "--id", target, "--json")

    # then only that one is handled, and the other two stay parked
    assert code == 0
    assert [p["id"] for p in json.loads(out)["replayed"]] == [target]
    await eventually(lambda: _is(welcomer.handled), what="replayed message handled")
    await stays(lambda: _is(len(welcomer.handled) == 1), seconds=0.5)
    assert welcomer.handled[0][0] == target
    left = [m.message_id for m in await queue_messages(cli_env, f"{SERVICE}.dlq")]
    assert sorted(left) == sorted([ids[0], ids[2]])

    # and an id that is not parked is reported, with nothing moved
    code, _, err = await run_cli(capsys, "dlq", "replay", SERVICE, "--id", "no-such-id")
    assert code == 1
    assert "not found" in err and "no-such-id" in err
    assert await parked_count(cli_env) == 2
    await consumer.stop()


async def test_replay_without_the_service_queue_keeps_the_message(
    broker: Broker, cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a parked message and the service's queue deleted (nowhere to replay to)
    consumer = await park(broker, cli_env, Welcomer(BadMessage), user(1))
    await consumer.stop()
    channel = await broker.connection.channel()
    await channel.queue_delete(SERVICE)
    await channel.close()
    # when the operator replays
    code, _, err = await run_cli(capsys, "dlq", "replay", SERVICE, "--all")
    # then it fails with a reason and the message is still parked
    assert code == 1
    assert f"no queue '{SERVICE}'" in err
    assert await parked_count(cli_env) == 1


async def test_purge_asks_refuses_without_a_terminal_and_empties_with_yes(
    broker: Broker,
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = await park(broker, cli_env, Welcomer(BadMessage), user(1), user(2))

    # without a terminal and without --yes it refuses
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = await run_cli(capsys, "dlq", "purge", SERVICE)
    assert code == 2
    assert "--yes" in err
    assert await parked_count(cli_env) == 2

    # on a terminal, answering no purges nothing
    monkeypatch.setattr(sys, "stdin", _Tty("n\n"))
    code, out, _ = await run_cli(capsys, "dlq", "purge", SERVICE)
    assert code == 2
    assert "Purge 2 message(s)" in out
    assert await parked_count(cli_env) == 2

    # with --yes it empties the DLQ
    code, out, _ = await run_cli(capsys, "dlq", "purge", SERVICE, "--yes")
    assert code == 0
    assert f"purged 2 message(s) from {SERVICE}.dlq" in out
    assert await parked_count(cli_env) == 0
    await consumer.stop()


async def test_show_reveals_what_an_unparseable_message_held(
    broker: Broker, cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given garbage published with a routing key the service consumes
    consumer = Consumer(broker, SERVICE, {UserRegistered: Welcomer()}, None)
    await consumer.start()
    await publish_raw(cli_env, "user.registered", b"{not json", message_id="poison-1")
    await eventually(lambda: parked_count(cli_env), what="poison parked")
    # when the operator looks at it
    code, out, _ = await run_cli(capsys, "dlq", "show", SERVICE, "--json")
    # then they see its id, the parse error, the original routing key and the raw body
    assert code == 0
    [parked] = json.loads(out)["shown"]
    assert parked["id"] == "poison-1"
    assert parked["type"] is None
    assert parked["routing_key"] == "user.registered"
    assert parked["attempts"] == 1
    assert "ValidationError" in parked["error"]
    assert parked["body"] == "{not json"
    code, out, _ = await run_cli(capsys, "dlq", "show", SERVICE)
    assert "body '{not json'" in out
    await consumer.stop()


async def test_show_of_an_unknown_service_fails_with_a_hint(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await run_cli(capsys, "dlq", "show", "no-such-service")
    assert code == 1
    assert "no queue 'no-such-service.dlq'" in err


async def test_dlq_list_works_as_a_real_command(broker: Broker, amqp_url: str) -> None:
    # given a parked message
    consumer = await park(broker, amqp_url, Welcomer(BadMessage), user(1))
    # when the operator runs the documented command in a shell
    uv = shutil.which("uv")
    command = [uv, "run", "python"] if uv else [sys.executable]
    proc = await asyncio.create_subprocess_exec(
        *command,
        "-m",
        "events",
        "dlq",
        "list",
        SERVICE,
        cwd=REPO,
        env={**os.environ, "AMQP_URL": amqp_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    # then it reports the count and the reason
    assert proc.returncode == 0, err.decode()
    assert f"{SERVICE}.dlq  1" in out.decode()
    assert "BadMessage: smtp is down" in out.decode()
    await consumer.stop()


async def test_dead_letters_count_is_none_for_a_missing_queue(amqp_url: str) -> None:
    async with DeadLetters.open(amqp_url) as dl:
        assert await dl.count("nothing-here.dlq") is None
        # the connection survives the broker closing the channel of the failed check
        assert await dl.count("nothing-here.dlq") is None


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def _is(value: Any) -> Any:
    return value
