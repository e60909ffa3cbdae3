"""The notifier's database: its own ``user_id -> email, username`` directory, and one record
per notice — claimed before the send, marked sent right after it — that keeps each
(event id, kind) to one e-mail."""

from __future__ import annotations

import enum
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from events.contracts import utcnow
from events.store import Store
from notifier.mailer import Letter, Recipient

SENDING, SENT, FAILED = "sending", "sent", "failed"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Claim(enum.Enum):
    ACQUIRED = "acquired"  # ours to send
    SENT = "sent"  # sent before: nothing to do
    BUSY = "busy"  # another delivery of the same event is sending it right now


class NotifierStore(Store):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.directory = self.db["directory"]
        self.notices = self.db["notices"]

    async def setup(self) -> None:
        await super().setup()
        await self.notices.create_index("event_id")
        await self.notices.create_index("to")

    # -- the directory ------------------------------------------------------------------
    async def remember(self, recipient: Recipient) -> None:
        for _ in range(2):  # two first upserts of one user may race; the loser updates
            try:
                await self.directory.update_one(
                    {"_id": recipient.user_id},
                    {
                        "$set": {"email": recipient.email, "username": recipient.username},
                        "$setOnInsert": {"registered_at": utcnow()},
                    },
                    upsert=True,
                )
                return
            except DuplicateKeyError:
                continue

    async def recipient(self, user_id: str) -> Recipient | None:
        doc = await self.directory.find_one({"_id": user_id})
        if doc is None:
            return None
        return Recipient(user_id=user_id, email=doc["email"], username=doc["username"])

    # -- notices ------------------------------------------------------------------------
    async def claim(self, letter: Letter, *, owner: str, lease: float) -> tuple[Claim, datetime]:
        """Take the notice for ``lease`` seconds unless it was sent or another delivery holds
        it. Returns the outcome and until when the current holder's lease runs."""
        now = utcnow()
        until = now + timedelta(seconds=lease)
        notice = letter.notice
        try:
            await self.notices.find_one_and_update(
                {"_id": notice.key, "status": {"$ne": SENT}, "lease_until": {"$lte": now}},
                {
                    "$set": {
                        "status": SENDING,
                        "lease_until": until,
                        "lease_owner": owner,
                        "event_id": notice.event_id,
                        "kind": notice.kind,
                        "recipient": asdict(notice.to),
                        "to": notice.to.email,
                        "subject": notice.subject,
                        "message_id": letter.message_id,
                        "text": letter.text,
                        "html": letter.html,
                    },
                    "$inc": {"attempts": 1},
                    "$setOnInsert": {"created_at": now},
                },
                upsert=True,
            )
            return Claim.ACQUIRED, until
        except DuplicateKeyError:
            pass  # it exists and did not match: sent, or leased by someone else
        doc = await self.notices.find_one({"_id": notice.key}) or {}
        if doc.get("status") == SENT:
            return Claim.SENT, now
        return Claim.BUSY, _aware(doc.get("lease_until", now))

    async def mark_sent(self, key: str, *, owner: str) -> None:
        # Unconditional on the owner: the relay accepted this e-mail, whoever holds the lease.
        await self.notices.update_one(
            {"_id": key},
            {
                "$set": {"status": SENT, "sent_at": utcnow(), "sent_by": owner},
                "$unset": {"lease_owner": "", "last_error": ""},
            },
        )

    async def release(self, key: str, *, owner: str, error: str) -> None:
        """Give the notice back at once after a failed send, so the retry need not wait."""
        await self.notices.update_one(
            {"_id": key, "lease_owner": owner, "status": SENDING},
            {
                "$set": {"status": FAILED, "lease_until": _EPOCH, "last_error": error[:2000]},
                "$unset": {"lease_owner": ""},
            },
        )

    async def notice(self, key: str) -> dict[str, Any] | None:
        return await self.notices.find_one({"_id": key})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
