"""Access tokens as the users service signs them, checked with the verifier every service
shares (``events.auth``) and only with what the JWKS publishes."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from events.auth import ALGORITHMS, DEFAULT_AUDIENCE, DEFAULT_ISSUER, keys_from_jwks, verify
from users.tokens import ALGORITHM, SigningKey, Tokens, UnusableKey


def tokens(ttl: float = 900) -> Tokens:
    return Tokens(SigningKey.generate(), ttl=timedelta(seconds=ttl))


def test_the_signing_algorithm_is_one_the_verifiers_accept() -> None:
    assert ALGORITHM in ALGORITHMS


def test_a_token_verifies_with_nothing_but_the_published_jwks() -> None:
    issuer = tokens()
    issued = issuer.issue(user_id="u-1", username="alice")

    principal = verify(
        issued.access_token,
        keys_from_jwks(issuer.jwks()),
        issuer=DEFAULT_ISSUER,
        audience=DEFAULT_AUDIENCE,
    )

    assert (principal.user_id, principal.username) == ("u-1", "alice")
    assert issued.expires_in == 900


def test_a_token_carries_the_contract_claims_and_a_kid() -> None:
    issuer = tokens(ttl=600)
    token = issuer.issue(user_id="u-1", username="alice").access_token

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})

    assert header["alg"] == "EdDSA"
    assert header["kid"] == issuer.key.kid
    assert claims["sub"] == "u-1"
    assert claims["username"] == "alice"
    assert claims["iss"] == DEFAULT_ISSUER
    assert claims["aud"] == DEFAULT_AUDIENCE
    assert claims["exp"] - claims["iat"] == 600


def test_the_jwks_lists_the_public_half_only() -> None:
    issuer = tokens()

    (jwk,) = issuer.jwks()["keys"]

    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": jwk["x"],
        "kid": issuer.key.kid,
        "use": "sig",
        "alg": "EdDSA",
    }
    assert "d" not in jwk


def test_the_kid_is_the_rfc7638_thumbprint_of_the_public_key() -> None:
    key = SigningKey.generate()
    jwk = key.public_jwk()

    canonical = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}).replace(" ", "")
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=")

    assert key.kid == expected.decode()


def test_a_key_survives_a_pem_round_trip_with_the_same_kid() -> None:
    key = SigningKey.generate()

    again = SigningKey.from_pem(key.private_pem().encode())

    assert again.kid == key.kid


def test_a_key_file_is_read(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "jwt.pem"
    path.write_text(key.private_pem())

    assert SigningKey.from_file(path).kid == key.kid


def test_an_rsa_key_is_refused_with_a_hint() -> None:
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )

    with pytest.raises(UnusableKey, match="Ed25519"):
        SigningKey.from_pem(pem.encode())


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt.pem"
    path.write_text("not a key")

    with pytest.raises(UnusableKey, match="not an unencrypted PEM private key"):
        SigningKey.from_file(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnusableKey, match="cannot be read"):
        SigningKey.from_file(tmp_path / "absent.pem")
