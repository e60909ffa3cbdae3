"""The users service's HTTP API (contract §2): registration, tokens, the caller's profile,
and the public keys that verify tokens."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer
from pydantic import AfterValidator, BaseModel, EmailStr, Field

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
async def get_accounts(request: Request) -> Accounts:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool
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
    install_common(app, settings.service_name, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        challenge = 'Bearer error="invalid_token"' if exc.invalid_token else "Bearer"
        return JSONResponse(
            {"detail": exc.detail}, status_code=401, headers={"WWW-Authenticate": challenge}
        )

    return app
