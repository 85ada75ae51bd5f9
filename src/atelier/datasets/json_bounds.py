"""The bounds a JSON upload is held to, checked without parsing it in Python.

polars parses JSON (in Rust, up to 1024 levels deep), but what it accepts does not always go
further: Arrow imports a schema at most about 62 levels deep, an integer past 128 bits is an
error, one past 64 bits is an Arrow type that does not exist, and a NUL character in a name
makes polars panic. Python's `json` module, which only locates a bad line of JSON Lines, fails
on deep nesting (RecursionError) and on integers of more than 4300 digits (a ValueError).

So, with `MAX_DEPTH` levels of lists and objects inside a record's value and `MAX_DIGITS`
digits in an integer:

- `first_problem` scans the raw bytes, before polars runs, for a NUL, raw or escaped
  (`\\u0000`), and for an integer too long (polars makes some of them null, silently);
- `dtype_depth` measures what polars inferred, before Arrow sees it;
- `line_problem` checks one line's depth before `json.loads` parses it, and its integers as
  they are read.

Each is linear in its input, with no recursion on the data. `first_problem` reads a file in
1 MiB chunks: about 0.3 s per 100 MB of ordinary JSON (polars takes 2.5 s to parse it), 1.7 s
for JSON full of escapes and `\\u0000` text, on the development machine.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

import polars as pl

MAX_DEPTH = 32  # levels of lists and objects inside a record's value
MAX_DIGITS = 38  # polars reads integers of at most 128 bits (38 digits always fit)
CHUNK_BYTES = 1024 * 1024
MAX_DIGIT_CARRY = 64 * 1024

# A JSON string (the unrolled form: linear, no backtracking), and what is not a bracket.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# `u0000` after a run of backslashes: an escaped NUL when the run is odd (`\\u0000` is text);
# the first match is the whole run. Only run where `\u0000` occurs (bytes.find is faster).
_BACKSLASHES_U0000 = re.compile(rb"\\+u0000")
_BACKSLASH = 0x5C
_DIGITS = b"0123456789"
# Digits become `0` and all else `.`, so that bytes.find looks for long runs (a regex is 20
# times slower on numbers).
_DIGIT_MARKS = bytes.maketrans(
    bytes(range(256)), bytes(48 if 48 <= b <= 57 else 46 for b in range(256))
)
_LONG_RUN = b"0" * (MAX_DIGITS + 1)
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
NUL = "a NUL character (\\u0000 or a zero byte), which is not accepted in names or values"
INVALID = "invalid JSON"  # how `line_problem` starts when the line does not parse


class _LongInteger(ValueError):
    pass


def first_problem(path: pathlib.Path) -> tuple[int, str] | None:
    """The line of the first NUL character (raw or escaped) or integer of more than
    `MAX_DIGITS` digits outside strings, and what it is; None if there is neither.

    One pass in chunks. Strings never span lines in JSON, but a minified file is one line, so
    whether a digit run is inside a string is known from the parity of the quotes before it
    (escapes removed), counted through the whole file."""
    lines, quotes, carry, before = 1, 0, b"", b""
    with path.open("rb") as source:
        while True:
            chunk = source.read(CHUNK_BYTES)
            data = carry + chunk
            cut = _safe_cut(data) if chunk else len(data)  # at the end, all that is left
            found, quotes = _first_in(data, cut, quotes, before)
            if found is not None:
                return lines + data.count(b"\n", 0, found[0]), found[1]
            if not chunk:
                return None
            lines += data.count(b"\n", 0, cut)
            before = (before + data[max(cut - 2, 0) : cut])[-2:]
            carry = _without_backslash_pairs(data[cut:])


def _safe_cut(data: bytes) -> int:
    """Where to stop reading this chunk so that no escape, backslash run or digit run is cut
    (what follows waits for the next chunk); a run of `MAX_DIGIT_CARRY` digits or more is
    judged at once."""
    cut = max(len(data) - 5, 0)  # `\u0000` is 6 bytes
    run = cut - len(data[:cut].rstrip(_DIGITS))
    if run < MAX_DIGIT_CARRY:
        cut -= run
    escape = data.rfind(b"\\", max(cut - 5, 0), cut)  # an escape such as `\u0000` goes on
    if escape >= 0:
        cut = escape
    while cut > 0 and data[cut - 1] == _BACKSLASH:
        cut -= 1
    return cut


def _without_backslash_pairs(carry: bytes) -> bytes:
    """The carry without pairs of its leading backslashes (escaped backslashes: they hold
    no quote and no NUL), so that a long run of them does not grow the carry."""
    run = len(carry) - len(carry.lstrip(b"\\"))
    return carry[run - run % 2 :]


def _first_in(
    data: bytes, cut: int, quotes: int, before: bytes
) -> tuple[tuple[int, str] | None, int]:
    """The first problem starting in data[:cut], and the count of quotes outside escapes
    through it; `before` is what preceded `data` in the file (two bytes)."""
    found: list[tuple[int, str]] = []
    raw = data.find(b"\x00", 0, cut)
    if raw >= 0:
        found.append((raw, NUL))
    for match in _BACKSLASHES_U0000.finditer(data, 0, cut) if b"\\u0000" in data else ():
        if (match.end() - match.start()) % 2 == 0:  # an odd run of backslashes, then `u0000`
            found.append((match.start(), NUL))
            break
    start = 0
    for run_start, run_end in _long_runs(data, cut):
        quotes += _ESCAPE.sub(b"", data[start:run_start]).count(b'"')
        start = run_start
        context = (before + data[max(run_start - 2, 0) : run_start])[-2:]
        if quotes % 2 == 0 and _is_integer(context, data[run_end : run_end + 1]):
            found.append((run_start, _too_long(run_end - run_start)))
            break
    quotes += _ESCAPE.sub(b"", data[start:cut]).count(b'"')
    return min(found, default=None), quotes


def _long_runs(data: bytes, cut: int) -> Iterator[tuple[int, int]]:
    """Where runs of more than MAX_DIGITS digits start (before `cut`) and end (whole: the cut
    does not split them)."""
    marks = data.translate(_DIGIT_MARKS)
    start = marks.find(_LONG_RUN, 0)
    while 0 <= start < cut:
        end = marks.find(b".", start)
        end = len(data) if end < 0 else end
        yield start, end
        start = marks.find(_LONG_RUN, end)


def _is_integer(before: bytes, after: bytes) -> bool:
    """Whether a digit run between these bytes is a whole integer: not the fraction or the
    exponent of a float, nor its integer part, nor the rest of a run already judged."""
    last = before[-1:]
    in_exponent = last in (b"e", b"E") or (last in (b"+", b"-") and before[:1] in (b"e", b"E"))
    continued = last != b"" and last in _DIGITS
    return last != b"." and not in_exponent and not continued and after not in (b".", b"e", b"E")


def _too_long(digits: int) -> str:
    return (
        f"an integer of {digits} digits; at most {MAX_DIGITS} are accepted (write long "
        "identifiers as strings, in quotes)"
    )


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
        raise _LongInteger(_too_long(digits))
    return int(text)
