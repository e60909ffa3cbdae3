"""Signing access tokens: the Ed25519 key pair, the JWT we issue and the JWKS we publish.

Verification is ``events.auth``'s job (the same code ``orders`` runs), so both services
accept exactly the same tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from events.auth import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from events.contracts import new_id, utcnow

log = logging.getLogger("users.tokens")

#: What we sign with; ``events.auth.ALGORITHMS`` is the verifiers' allow-list.
ALGORITHM = "EdDSA"


class UnusableKey(ValueError):
    """The configured key cannot be used; the message says why."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        return {**_okp_members(self.public_key), "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def private_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, key: Ed25519PrivateKey) -> SigningKey:
        return cls(kid=thumbprint(key.public_key()), private_key=key)

    @classmethod
    def from_pem(cls, pem: bytes, *, origin: str = "PEM") -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise UnusableKey(f"{origin} is not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise UnusableKey(
                f"{origin} holds a {type(key).__name__}; an Ed25519 key is needed "
                "(openssl genpkey -algorithm ed25519 -out jwt.pem)"
            )
        return cls.from_private_key(key)

    @classmethod
    def from_file(cls, path: Path) -> SigningKey:
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise UnusableKey(f"JWT_PRIVATE_KEY_FILE {path} cannot be read: {exc}") from exc
        return cls.from_pem(pem, origin=f"JWT_PRIVATE_KEY_FILE {path}")


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: a ``kid`` that names the key itself, the same everywhere."""
    canonical = json.dumps(_okp_members(public_key), separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _okp_members(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Issued:
    access_token: str
    expires_in: int


class Tokens:
    """Issues access tokens with the active key; publishes the keys that verify them."""

    def __init__(self, key: SigningKey, *, ttl: timedelta) -> None:
        self.key = key
        self.ttl = ttl
        self.issuer = DEFAULT_ISSUER
        self.audience = DEFAULT_AUDIENCE

    def issue(self, *, user_id: str, username: str) -> Issued:
        now = utcnow()
        claims: dict[str, Any] = {
            "sub": user_id,
            "username": username,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.ttl,
            "jti": new_id(),
        }
        token = jwt.encode(
            claims, self.key.private_key, algorithm=ALGORITHM, headers={"kid": self.key.kid}
        )
        return Issued(access_token=token, expires_in=int(self.ttl.total_seconds()))

    def verification_keys(self) -> dict[str, Any]:
        """``kid -> public key``, the shape ``events.auth.verify`` takes."""
        return {self.key.kid: self.key.public_key}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.key.public_jwk()]}
