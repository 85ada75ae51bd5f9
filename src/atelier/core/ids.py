"""Random, non-sequential identifiers with a readable prefix: `ds_3kq7...`, `job_x2m4...`."""

import base64
import re
import secrets

_ID_BYTES = 15  # 120 bits of randomness, 24 base32 characters
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")


def new_id(prefix: str) -> str:
    """A fresh id such as `ds_k5x2...`; the prefix names the kind of object."""
    if not _PREFIX.match(prefix):
        raise ValueError(f"invalid id prefix {prefix!r}")
    body = base64.b32encode(secrets.token_bytes(_ID_BYTES)).decode("ascii").lower()
    return f"{prefix}_{body}"


def is_id(value: str, prefix: str) -> bool:
    """Whether `value` has the shape of an id made by `new_id(prefix)`."""
    head, sep, body = value.partition("_")
    return (
        sep == "_"
        and head == prefix
        and len(body) == _ID_BYTES * 8 // 5
        and all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in body)
    )
