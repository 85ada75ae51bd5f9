"""Access tokens (short-lived JWTs, HS256 only) and refresh tokens (opaque, stored hashed).

An access token names its sign-in (`sid`, the refresh-token family): logging out or a detected
refresh-token reuse ends the sign-in, and its access tokens are refused from the next request on
(`principals.resolve` reads the sign-in's state in the statement that loads the account).

The signing key is derived from ATELIER_SECRET_KEY, and its id (`kid`) from the key, so a
rotated secret is recognised by its kid. Only HS256 is accepted: `none`, RS*/ES* (key
confusion) and anything else are refused before a signature is looked at, and `jku`, `x5u`
and `jwk` headers are ignored (PyJWT never fetches keys).
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from atelier.core.errors import Unauthorized
from atelier.core.ids import new_id

ALGORITHM = "HS256"
AUDIENCE = "atelier-api"
ACCESS_TYP = "at+jwt"
REFRESH_PREFIX = "rt_"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes

    @classmethod
    def derive(cls, secret_key: str) -> "SigningKey":
        secret = hmac.new(secret_key.encode(), b"atelier/access-token/v1", "sha256").digest()
        return cls(kid=hashlib.sha256(secret).hexdigest()[:16], secret=secret)


@dataclass(frozen=True)
class TokenConfig:
    """How tokens are signed and how long they live; built once from the settings."""

    keys: list[SigningKey]  # the first one signs; all of them verify (rotation)
    issuer: str
    access_lifetime: timedelta
    refresh_lifetime: timedelta

    @classmethod
    def from_settings(
        cls, secret_key: str, *, issuer: str, access_minutes: int, refresh_days: int
    ) -> "TokenConfig":
        return cls(
            keys=[SigningKey.derive(secret_key)],
            issuer=issuer,
            access_lifetime=timedelta(minutes=access_minutes),
            refresh_lifetime=timedelta(days=refresh_days),
        )


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    session_id: str  # the sign-in (refresh-token family) the token was issued to
    expires_at: datetime
    token_id: str


def issue_access_token(
    key: SigningKey,
    *,
    user_id: str,
    session_id: str,
    issuer: str,
    now: datetime,
    lifetime: timedelta,
) -> tuple[str, datetime]:
    expires = now + lifetime
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": user_id,
        "sid": session_id,
        "iat": now,
        "nbf": now,
        "exp": expires,
        "jti": new_id("jti"),
    }
    token = jwt.encode(
        claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": ACCESS_TYP}
    )
    return token, expires


def read_access_token(token: str, keys: list[SigningKey], *, issuer: str) -> AccessClaims:
    """Verify signature, algorithm, type, issuer, audience and times; Unauthorized otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _invalid("malformed token") from None
    if header.get("alg") != ALGORITHM or header.get("typ") != ACCESS_TYP:
        raise _invalid("unexpected token type or algorithm")
    key = next((k for k in keys if hmac.compare_digest(k.kid, str(header.get("kid", "")))), None)
    if key is None:
        raise _invalid("unknown signing key")
    try:
        claims = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "sid"]},
        )
    except jwt.ExpiredSignatureError:
        raise _invalid("token expired") from None
    except jwt.PyJWTError:
        raise _invalid("invalid token") from None
    return AccessClaims(
        user_id=claims["sub"],
        session_id=str(claims["sid"]),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        token_id=claims["jti"],
    )


def new_refresh_token() -> tuple[str, str]:
    """(token to give the client, hash to store)."""
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """SHA-256 is enough: these tokens are 256 random bits, not passwords."""
    return hashlib.sha256(token.encode()).hexdigest()


def _invalid(reason: str) -> Unauthorized:
    return Unauthorized(
        f"The access token is not valid: {reason}",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )
