"""The users service's HTTP API (contract §2): registration, tokens, the caller's profile,
and the public keys that verify tokens."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer
from pydantic import AfterValidator, BaseModel, EmailStr, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events.auth import InvalidToken
from events.runtime import Runtime
from events.web import install_common, runtime_lifespan
from users.accounts import USERNAME_PATTERN, Accounts, BadCredentials
from users.bootstrap import bootstrap
from users.config import Settings
from users.store import Taken, User
from users.throttle import Throttled
from users.tokens import SigningKey

log = logging.getLogger("users.api")


# -- request and response bodies -------------------------------------------------------------
def _valid_text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Username = Annotated[
    str,
    Field(
        min_length=3,
        max_length=32,
        pattern=USERNAME_PATTERN,
        description="3-32 of a-z, 0-9, '_', '.', '-'; unique regardless of case",
        examples=["alice"],
    ),
]
Email = Annotated[
    EmailStr,
    AfterValidator(str.lower),
    Field(description="stored normalised (lowercase)", examples=["alice@example.com"]),
]
Password = Annotated[
    str,
    Field(min_length=8, max_length=128, examples=["correct horse battery"]),
    AfterValidator(_valid_text),
]


class NewUser(BaseModel):
    username: Username
    email: Email
    password: Password


class Profile(BaseModel):
    id: str
    username: str
    email: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> Profile:
        return cls(id=user.id, username=user.username, email=user.email, created_at=user.created_at)


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="seconds until the token expires")


class Problem(BaseModel):
    detail: str


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


# -- dependencies -----------------------------------------------------------------------------
def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
_bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


class Unauthorized(Exception):
    def __init__(self, detail: str, *, invalid_token: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.invalid_token = invalid_token


async def current_user(
    accounts: AccountsDep, token: Annotated[str | None, Depends(_bearer)]
) -> User:
    if not token:
        raise Unauthorized(
            "not authenticated: send 'Authorization: Bearer <token>'", invalid_token=False
        )
    try:
        return await accounts.whose(token)
    except InvalidToken as exc:
        # The reason is for the log only: a forger learns nothing from the answer.
        log.info("rejected a bearer token: %s", exc)
        raise Unauthorized("invalid or expired token", invalid_token=True) from exc


CurrentUser = Annotated[User, Depends(current_user)]


# -- routes -----------------------------------------------------------------------------------
users_router = APIRouter(prefix="/users", tags=["users"])


@users_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Profile,
    responses={409: _problem("the username or the email is already taken")},
)
async def register(body: NewUser, accounts: AccountsDep) -> Profile:
    try:
        user = await accounts.register(
            username=body.username, email=body.email, password=body.password
        )
    except Taken as exc:
        detail = (
            f"username {body.username!r} is already taken"
            if exc.field == "username"
            else "email is already registered"
        )
        return JSONResponse({"detail": detail}, status_code=409)  # type: ignore[return-value]
    return Profile.of(user)


@users_router.get(
    "/me", response_model=Profile, responses={401: _problem("missing, invalid or expired token")}
)
async def me(user: CurrentUser) -> Profile:
    return Profile.of(user)


auth_router = APIRouter(prefix="/auth", tags=["auth"])


@auth_router.post(
    "/token",
    response_model=AccessToken,
    responses={
        401: _problem("unknown username or wrong password (the same answer for both)"),
        429: _problem("too many failed logins for this username; see Retry-After"),
    },
)
async def token(
    accounts: AccountsDep,
    response: Response,
    username: Annotated[str, Form(min_length=1, max_length=254)],
    password: Annotated[str, Form(min_length=1, max_length=1024)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> AccessToken:
    """OAuth2 password grant: form fields ``username`` and ``password``."""
    try:
        issued = await accounts.login(username=username, password=password)
    except BadCredentials:
        return JSONResponse(  # type: ignore[return-value]
            {"detail": "incorrect username or password"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    except Throttled as exc:
        return JSONResponse(  # type: ignore[return-value]
            {"detail": f"too many failed logins for this username; retry in {exc.retry_after} s"},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
    # RFC 6749 §5.1: token responses must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return AccessToken(access_token=issued.access_token, expires_in=issued.expires_in)


keys_router = APIRouter(tags=["keys"])


@keys_router.get("/.well-known/jwks.json")
async def jwks(accounts: AccountsDep, response: Response) -> dict[str, list[dict[str, str]]]:
    """The public keys that verify access tokens (RFC 7517), looked up by ``kid``."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return accounts.tokens.jwks()


# -- the app ----------------------------------------------------------------------------------
def create_app(settings: Settings) -> FastAPI:
    # A configured key is checked now, so a wrong file stops start-up with a clear message.
    file_key = (
        SigningKey.from_file(settings.jwt_private_key_file)
        if settings.jwt_private_key_file is not None
        else None
    )

    async def wire(runtime: Runtime) -> None:
        app.state.accounts = await bootstrap(runtime, signing_key=file_key)

    app = FastAPI(
        title="eventshop users",
        version="1.0.0",
        description="Registration, login (OAuth2 password grant) and access tokens.",
        lifespan=runtime_lifespan(settings, wire),
    )
    app.include_router(users_router)
    app.include_router(auth_router)
    app.include_router(keys_router)
    install_common(app, settings.service_name)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        challenge = 'Bearer error="invalid_token"' if exc.invalid_token else "Bearer"
        return JSONResponse(
            {"detail": exc.detail}, status_code=401, headers={"WWW-Authenticate": challenge}
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _validation_problem(exc)

    return app


def _validation_problem(exc: RequestValidationError) -> Response:
    """FastAPI's 422 without the rejected ``input``: it would echo passwords back, and
    input that is not valid Unicode could not even be encoded."""
    errors = []
    for error in exc.errors():
        entry = {k: v for k, v in error.items() if k not in ("input", "url")}
        if "ctx" in entry:
            entry["ctx"] = {k: v if _is_json_scalar(v) else str(v) for k, v in entry["ctx"].items()}
        errors.append(entry)
    body = json.dumps({"detail": errors}, ensure_ascii=True, default=str)
    return Response(body, status_code=422, media_type="application/json")


def _is_json_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413 before anything buffers them, whether the
    client announced the length or streams it in chunks."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI turns other errors while reading the body into 400.
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": _TooLarge(self.max_bytes).detail})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (limit {limit} bytes)")
