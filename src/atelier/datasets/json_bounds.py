"""The bounds a JSON upload is held to, checked without parsing it in Python.

polars parses JSON (in Rust, up to 1024 levels deep), but what it accepts does not always go
further: Arrow imports a schema at most about 62 levels deep, an integer past 128 bits is an
error, one past 64 bits is an Arrow type that does not exist, and a NUL character in a name
makes polars panic. Python's `json` module, which only locates a bad line of JSON Lines, fails
on deep nesting (RecursionError) and on integers of more than 4300 digits (a ValueError).

So, with `MAX_DEPTH` levels of lists and objects inside a record's value and `MAX_DIGITS`
digits in an integer:

- `find_nul` scans the raw bytes for a NUL, raw or escaped (`\\u0000`), before polars runs;
- `dtype_depth` measures what polars inferred, before Arrow sees it;
- `line_problem` checks one line's depth before `json.loads` parses it, and its integers as
  they are read.

Each is linear in its input, with no recursion on the data.
"""

from __future__ import annotations

import json
import pathlib
import re
from itertools import accumulate
from typing import Any

import polars as pl

MAX_DEPTH = 32  # levels of lists and objects inside a record's value
MAX_DIGITS = 38  # polars reads integers of at most 128 bits (38 digits always fit)
CHUNK_BYTES = 1024 * 1024

# A JSON string (the unrolled form: linear, no backtracking), and what is not a bracket.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# `u0000` after a run of backslashes: an escaped NUL when the run is odd (`\\u0000` is text).
# The leading literal lets the regex engine skip ahead; the first match is the whole run.
_BACKSLASHES_U0000 = re.compile(rb"\\+u0000")
_BACKSLASH = 0x5C
INVALID = "invalid JSON"  # how `line_problem` starts when the line does not parse


class _LongInteger(ValueError):
    pass


def find_nul(path: pathlib.Path) -> int | None:
    """The line of the first NUL character, raw or escaped, or None."""
    lines = 1
    carry = b""
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            data = carry + chunk
            found = _nul_in(data)
            if found is not None:
                return lines + data.count(b"\n", 0, found)
            # Keep what may start an escape cut by the chunk's end, with all its backslashes.
            cut = max(len(data) - 5, 0)
            while cut > 0 and data[cut - 1] == _BACKSLASH:
                cut -= 1
            lines += data.count(b"\n", 0, cut)
            carry = data[cut:]
    return None


def _nul_in(data: bytes) -> int | None:
    raw = data.find(b"\x00")
    escaped = next(
        (m.start() for m in _BACKSLASHES_U0000.finditer(data) if (m.end() - m.start()) % 2 == 0),
        -1,
    )  # an odd run of backslashes plus `u0000`: an even length
    found = [i for i in (raw, escaped) if i >= 0]
    return min(found) if found else None


def depth(text: str) -> int:
    """How deep lists and objects nest in `text` (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def dtype_depth(dtype: pl.DataType) -> int:
    """How deep a polars type nests lists and structs (a plain type is 0)."""
    deepest, todo = 0, [(dtype, 0)]
    while todo:
        current, level = todo.pop()
        deepest = max(deepest, level)
        if isinstance(current, pl.Struct):
            todo.extend((field.dtype, level + 1) for field in current.fields)
        elif isinstance(current, (pl.List, pl.Array)):
            todo.append((current.inner, level + 1))
    return deepest


def without_wide_ints(dtype: pl.DataType) -> pl.DataType:
    """The type with 128-bit integers, nested ones included, made text (Arrow has no such
    integers; the digits are kept). Only called on types `dtype_depth` has bounded."""
    if dtype in (pl.Int128, pl.UInt128):
        return pl.String()
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: without_wide_ints(f.dtype) for f in dtype.fields})
    if isinstance(dtype, pl.List):
        return pl.List(without_wide_ints(dtype.inner))
    if isinstance(dtype, pl.Array):
        return pl.Array(without_wide_ints(dtype.inner), dtype.shape)
    return dtype


def has_wide_ints(dtype: pl.DataType) -> bool:
    return without_wide_ints(dtype) != dtype


def line_problem(line: str) -> str | None:
    """Why one line of JSON Lines is not a record polars can read, or None."""
    levels = depth(line) - 1  # the record's own braces
    if levels > MAX_DEPTH:
        return f"values nested {levels} levels deep; at most {MAX_DEPTH} are accepted"
    try:
        value = json.loads(line, parse_int=_bounded_int)
    except _LongInteger as exc:
        return str(exc)
    except json.JSONDecodeError as exc:
        return f"{INVALID}: {exc.msg} at column {exc.colno}"
    except ValueError as exc:  # what else json's number parsing can raise
        return f"{INVALID}: {str(exc)[:200]}"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__} instead of an object"
    return None


def _bounded_int(text: str) -> Any:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise _LongInteger(
            f"an integer of {digits} digits; at most {MAX_DIGITS} are accepted (write long "
            "identifiers as strings, in quotes)"
        )
    return int(text)
