"""Password hashing (Argon2id via pwdlib) and the strength rule (length plus zxcvbn)."""

from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from zxcvbn import zxcvbn

from atelier.core.errors import InvalidInput

_HASHER = PasswordHash((Argon2Hasher(),))
MAX_LENGTH = 256


@cache
def _dummy_hash() -> str:
    """Verified against when the email is unknown, so both paths cost one Argon2 check."""
    return _HASHER.hash("atelier-timing-equalizer")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(matches, new hash if the stored one uses old parameters). Costs the same when the
    account has no password or does not exist."""
    if password_hash is None:
        _HASHER.verify(password, _dummy_hash())
        return False, None
    return _HASHER.verify_and_update(password, password_hash)


def check_strength(
    password: str, *, min_length: int, min_score: int, user_inputs: list[str]
) -> None:
    """Refuse a short, overlong or guessable password with a field-level 422."""
    problem = None
    if len(password) < min_length:
        problem = f"Use at least {min_length} characters"
    elif len(password) > MAX_LENGTH:
        problem = f"Use at most {MAX_LENGTH} characters"
    else:
        result = zxcvbn(password, user_inputs=user_inputs)
        if result["score"] < min_score:
            hint = result["feedback"].get("warning") or "it is too easy to guess"
            problem = f"This password is too weak: {hint}".rstrip(".")
    if problem:
        raise InvalidInput(
            "The password is not acceptable",
            errors=[{"pointer": "/body/password", "detail": problem}],
        )
