"""What the users service does, free of HTTP: register, log in, tell who a token is for."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from events import auth
from events.contracts import UserRegistered, new_id, utcnow
from events.store import Tx
from users.passwords import Passwords
from users.store import User, UsersStore
from users.throttle import LoginThrottle
from users.tokens import Issued, Tokens

log = logging.getLogger("users.accounts")

#: Usernames: 3-32 of a-z, 0-9, "_", "." and "-"; letters in either case, unique
#: regardless of case ("Alice" and "alice" are the same account).
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,32}$"
_USERNAME = re.compile(USERNAME_PATTERN)


class BadCredentials(Exception):
    """Unknown username or wrong password: deliberately the same to the caller."""


@dataclass
class Accounts:
    store: UsersStore
    passwords: Passwords
    tokens: Tokens
    throttle: LoginThrottle

    async def register(self, *, username: str, email: str, password: str) -> User:
        """Store a new account and record ``UserRegistered`` in the same transaction.
        Raises :class:`users.store.Taken` when the username or email is in use."""
        # Hash before the transaction: it is slow and needs no database.
        password_hash = await self.passwords.hash(password)
        now = utcnow()
        user = User(
            id=new_id(),
            username=username,
            email=email,
            # MongoDB keeps milliseconds; round now so the 201 and later reads agree.
            created_at=now.replace(microsecond=now.microsecond // 1000 * 1000),
            password_hash=password_hash,
        )

        async def work(tx: Tx) -> None:
            await self.store.add_user(tx, user)
            await tx.record(UserRegistered(user_id=user.id, username=username, email=email))

        await self.store.transaction(work)
        log.info("user registered", extra={"user_id": user.id, "username": username})
        return user

    async def authenticate(self, *, username: str, password: str) -> User:
        """The account these credentials open. Raises :class:`BadCredentials` (same for an
        unknown user and a wrong password, after as much work) or
        :class:`users.throttle.Throttled`."""
        if not _USERNAME.fullmatch(username):
            # No such account can exist; spend the same time as for a real one.
            await self.passwords.verify(None, password)
            raise BadCredentials
        key = username.lower()
        async with self.throttle.attempt(key):
            user = await self.store.find_by_username(key)
            ok = await self.passwords.verify(user.password_hash if user else None, password)
            if user is None or not ok:
                await self.throttle.failed(key)
                log.info("login failed", extra={"username": key})
                raise BadCredentials
            await self.throttle.succeeded(key)
        if self.passwords.needs_rehash(user.password_hash):
            await self._rehash(user, password)
        return user

    async def login(self, *, username: str, password: str) -> Issued:
        user = await self.authenticate(username=username, password=password)
        log.info("token issued", extra={"user_id": user.id})
        return self.tokens.issue(user_id=user.id, username=user.username)

    async def whose(self, token: str) -> User:
        """The account a bearer token is for. Raises :class:`events.auth.InvalidToken`."""
        try:
            principal = auth.verify(
                token,
                self.tokens.verification_keys(),
                issuer=self.tokens.issuer,
                audience=self.tokens.audience,
            )
        except (ValueError, TypeError) as exc:
            # A token crafted to trip the JWT library is still just an invalid token.
            raise auth.InvalidToken(f"unusable token: {exc!r}") from exc
        user = await self.store.get(principal.user_id)
        if user is None:
            raise auth.InvalidToken(f"no account {principal.user_id!r}")
        return user

    async def _rehash(self, user: User, password: str) -> None:
        # The cost parameters changed since this hash was made: upgrade it now that we
        # have the password in hand.
        new_hash = await self.passwords.hash(password)
        if await self.store.replace_hash(user.id, user.password_hash, new_hash):
            log.info("password rehashed with current parameters", extra={"user_id": user.id})
