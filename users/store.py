"""The users service's database: accounts, the token signing key, failed logins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure

from events.store import Document, Store, Tx

USERNAME_INDEX = "username_key_unique"
EMAIL_INDEX = "email_unique"
ACTIVE_KEY_ID = "active"
_INDEX_OPTIONS_CONFLICT, _INDEX_KEY_SPECS_CONFLICT = 85, 86


@dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    created_at: datetime
    password_hash: str

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> User:
        return cls(
            id=doc["_id"],
            username=doc["username"],
            email=doc["email"],
            created_at=doc["created_at"],
            password_hash=doc["password_hash"],
        )


class Taken(Exception):
    """A unique field (``username`` or ``email``) already belongs to another account."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is taken")
        self.field = field


class UsersStore(Store):
    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        *,
        source: str = "/users",
        failure_window: timedelta = timedelta(minutes=15),
    ) -> None:
        super().__init__(client, database, source=source)
        self.failure_window = failure_window
        self.users = self.db["users"]
        self.keys = self.db["signing_keys"]
        self.login_failures = self.db["login_failures"]

    async def setup(self) -> None:
        await super().setup()
        # Usernames are unique regardless of case: the key is the lowercased name.
        await self.users.create_index("username_key", unique=True, name=USERNAME_INDEX)
        # Emails are stored normalised (lowercased), so this index is case-insensitive too.
        await self.users.create_index("email", unique=True, name=EMAIL_INDEX)
        await self.login_failures.create_index(
            [("username_key", ASCENDING), ("at", DESCENDING)], name="by_username"
        )
        await self._expire_login_failures(int(self.failure_window.total_seconds()) + 60)

    async def _expire_login_failures(self, seconds: int) -> None:
        """Failures older than the window no longer count; let the server delete them. A
        restart with another LOGIN_FAILURE_WINDOW_SECONDS changes the existing index."""
        try:
            await self.login_failures.create_index("at", expireAfterSeconds=seconds, name="expiry")
        except OperationFailure as exc:
            if exc.code not in (_INDEX_OPTIONS_CONFLICT, _INDEX_KEY_SPECS_CONFLICT):
                raise
            await self.db.command(
                {
                    "collMod": self.login_failures.name,
                    "index": {"name": "expiry", "expireAfterSeconds": seconds},
                }
            )

    # -- accounts -------------------------------------------------------------------------
    async def add_user(self, tx: Tx, user: User) -> None:
        """Insert inside ``tx``; raises :class:`Taken` when the username or email exists."""
        try:
            await self.users.insert_one(
                {
                    "_id": user.id,
                    "username": user.username,
                    "username_key": user.username.lower(),
                    "email": user.email,
                    "created_at": user.created_at,
                    "password_hash": user.password_hash,
                },
                session=tx.session,
            )
        except DuplicateKeyError as exc:
            raise Taken(await self._taken_field(exc, user)) from exc

    async def _taken_field(self, exc: DuplicateKeyError, user: User) -> str:
        pattern = (exc.details or {}).get("keyPattern") or {}
        if "username_key" in pattern:
            return "username"
        if "email" in pattern:
            return "email"
        # A server that does not say which index: look (outside the aborted transaction).
        found = await self.users.find_one({"username_key": user.username.lower()}, {"_id": 1})
        return "username" if found else "email"

    async def find_by_username(self, username: str) -> User | None:
        doc = await self.users.find_one({"username_key": username.lower()})
        return User.from_doc(doc) if doc else None

    async def get(self, user_id: str) -> User | None:
        doc = await self.users.find_one({"_id": user_id})
        return User.from_doc(doc) if doc else None

    async def replace_hash(self, user_id: str, old: str, new: str) -> bool:
        """Swap the hash only if nobody changed it meanwhile (two replicas rehashing)."""
        result = await self.users.update_one(
            {"_id": user_id, "password_hash": old}, {"$set": {"password_hash": new}}
        )
        return result.modified_count == 1

    # -- signing key ----------------------------------------------------------------------
    async def signing_key_pem(self, candidate_pem: str, kid: str) -> str:
        """The stored private key; ``candidate_pem`` is stored first if there is none yet.
        Insert-if-absent, so replicas starting together all end up with the same key."""
        try:
            await self.keys.insert_one(
                {"_id": ACTIVE_KEY_ID, "kid": kid, "private_pem": candidate_pem}
            )
        except DuplicateKeyError:
            pass
        doc = await self.keys.find_one({"_id": ACTIVE_KEY_ID})
        if doc is None:  # pragma: no cover - only if someone deletes it between the calls
            raise RuntimeError("the signing key vanished right after it was stored")
        return str(doc["private_pem"])

    # -- failed logins --------------------------------------------------------------------
    async def add_login_failure(self, username_key: str, at: datetime) -> None:
        await self.login_failures.insert_one({"username_key": username_key, "at": at})

    async def recent_login_failures(
        self, username_key: str, since: datetime, limit: int
    ) -> list[datetime]:
        """Times of the latest ``limit`` failures after ``since``, newest first."""
        cursor = (
            self.login_failures.find(
                {"username_key": username_key, "at": {"$gt": since}}, {"at": 1}
            )
            .sort("at", DESCENDING)
            .limit(limit)
        )
        return [doc["at"] async for doc in cursor]

    async def clear_login_failures(self, username_key: str) -> None:
        await self.login_failures.delete_many({"username_key": username_key})
