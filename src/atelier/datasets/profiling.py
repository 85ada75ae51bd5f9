"""What a table holds: a kind per column (the schema AutoML starts from) and a profile of each.

`profile_table` returns a JSON-able dict (no NaN or infinity: missing numbers are None):

    {"rows", "columns", "sampled", "sample_rows", "columns_profile": [
        {"name", "type", "kind", "role", "reason"?, "missing", "missing_fraction", "distinct",
         "top": [{"value", "count"}],
         numeric and integer: "min", "max", "mean", "std", "infinite", "quantiles", "histogram",
         datetime: "min", "max" (ISO 8601), "histogram" (ISO edges), and for text dates
                   "format" (a strftime format, or None for ISO 8601 variants) and
                   "unparsed" (values that are not dates),
         text: "mean_length", "max_length"}]}

Exact over all rows: `missing` (nulls, and NaN in float columns), `distinct` (non-null values),
`top` (the ten most frequent values, ties broken by value), `min`, `max`, `mean`, `std`, text
lengths. From a seeded random sample of `sample_rows` rows when the table is larger (`sampled`):
`quantiles`, `histogram` (20 equal-width bins between the exact min and max, counting sampled
values), and the parts of the kind rules marked (sample) below. The same table and seed always
give the same profile.

Kind rules, first match wins (`distinct` counts non-null values, `present` = non-null rows):

1. constant: at most one distinct value (or no values at all). Role `ignored`.
2. boolean: an Arrow bool, or values that are exactly one of the pairs true/false, yes/no,
   0/1, y/n, t/f once case and surrounding spaces are ignored (so `Yes`, `yes`, `NO` count);
   numbers 0 and 1 count.
3. datetime: a date, timestamp or time type, or text of which at least 95 % of the non-null
   sampled values parse with one date format (sample): ISO 8601 forms, day-first and
   month-first forms with `/`, `.` or `-`, `1 Mar 2024`, `Mar 1, 2024`; the format parsing
   most values wins, a tie goes to the one listed first (so day-first before month-first).
4. identifier (role `ignored`): no missing values and a different value on every row, and
   - integers (or whole floats): the name has an id-like word (`id`, `uuid`, `key`, `pk`,
     `idx`, `index`, also in camelCase as in `userId`), or there are at least 10 rows and the
     values are a contiguous range (a row number);
   - text: not free text (mean length at most 64, at most 10 % of values with whitespace)
     (sample), and an id-like name or at least 10 rows.
   A unique float column stays numeric: measurements are often all different.
5. integer: an integer type, or floats that are all whole numbers (within 2**53). Integers stay
   integer at any cardinality; whether a small set of codes is categorical is left to AutoML.
6. numeric: any other number (floats, decimals, durations as seconds).
7. Text that is none of the above: categorical when distinct <= max(20, 5 % of present);
   text when values are long (mean length > 20) or wordy (two or more runs of whitespace on
   average) (sample); otherwise categorical when distinct <= 50 % of present, else text.

Performance, measured once on the development machine (2 cores, polars 2.1): profiling a
1,000,000 x 20 table (an id, 8 floats, 3 integers, 3 categorical and 2 free-text columns, a
boolean, a timestamp and ISO dates as text) takes 1.7 to 1.9 s:

    ATELIER_PROFILE_BENCH=1 .venv/bin/pytest -q -s -p no:cacheprovider \
        tests/datasets/test_profiling.py -k million
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

KINDS = (
    "numeric",
    "integer",
    "boolean",
    "categorical",
    "datetime",
    "text",
    "identifier",
    "constant",
)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
BINS = 20
TOP_VALUES = 10
TOP_VALUE_CHARS = 200
DATETIME_SHARE = 0.95
MIN_IDENTIFIER_ROWS = 10
_MAX_EXACT_FLOAT = 2.0**53
_ID_WORDS = frozenset({"id", "ids", "uuid", "guid", "key", "pk", "idx", "index"})
_BOOLEAN_PAIRS = (
    frozenset({"true", "false"}),
    frozenset({"yes", "no"}),
    frozenset({"0", "1"}),
    frozenset({"y", "n"}),
    frozenset({"t", "f"}),
)
# Tried in this order, the first parsing most values wins; None, polars' own inference, takes
# the ISO 8601 variants (with or without time, fraction, offset, even mixed in one column).
_DATE_FORMATS: tuple[str | None, ...] = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M:%S",
    "%d/%m/%Y",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d-%m-%Y",
    "%d %b %Y",
    "%b %d, %Y",
    None,
)
_DATE_PROBE_VALUES = 1000
_WORD_SPLIT = re.compile(r"[^0-9a-z]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


# ---- public API -------------------------------------------------------------------------------


def profile_table(table: pa.Table, *, sample_rows: int = 100_000, seed: int = 0) -> dict[str, Any]:
    """Profile every column of `table` (unique column names, flat types)."""
    if len(set(table.column_names)) != table.num_columns:
        raise ValueError("profile_table needs unique column names")
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.select(_prepared(name, dtype) for name, dtype in frame.schema.items())
    rows = frame.height
    sampled = rows > sample_rows
    sample = frame.sample(n=sample_rows, seed=seed) if sampled else frame
    stats = _exact_stats(frame)
    tops = _counted(frame, stats)
    columns = []
    for field in table.schema:
        column = _Column(
            name=field.name,
            arrow_type=str(field.type),
            values=frame.get_column(field.name),
            sample=sample.get_column(field.name),
            stats=stats[field.name],
            rows=rows,
        )
        columns.append({**_profile_column(column), "top": tops[field.name]})
    return {
        "rows": rows,
        "columns": table.num_columns,
        "sampled": sampled,
        "sample_rows": sample.height,
        "columns_profile": [_ordered(column) for column in columns],
    }


def schema_of(profile: dict[str, Any]) -> list[dict[str, str]]:
    """The columns' names, kinds and Arrow types, in column order."""
    return [
        {"name": column["name"], "kind": column["kind"], "type": column["type"]}
        for column in profile["columns_profile"]
    ]


def schema_diff(old: list[dict[str, str]], new: list[dict[str, str]]) -> dict[str, list]:
    """Columns added, removed, and changed in kind or type, from `old` to `new` (by name)."""
    before = {column["name"]: column for column in old}
    after = {column["name"]: column for column in new}
    changed = []
    for column in new:
        previous = before.get(column["name"])
        if previous is None:
            continue
        was = {"kind": previous["kind"], "type": previous["type"]}
        now = {"kind": column["kind"], "type": column["type"]}
        if was != now:
            changed.append({"name": column["name"], "from": was, "to": now})
    return {
        "added": [column["name"] for column in new if column["name"] not in before],
        "removed": [column["name"] for column in old if column["name"] not in after],
        "changed": changed,
    }


# ---- preparation and exact statistics ---------------------------------------------------------


def _prepared(name: str, dtype: pl.DataType) -> pl.Expr:
    """The column as profiled: NaN is missing, decimals are floats, durations are seconds."""
    column = pl.col(name)
    if dtype.is_float():
        return column.fill_nan(None)
    if isinstance(dtype, pl.Decimal):
        return column.cast(pl.Float64)
    if isinstance(dtype, pl.Duration):
        per_second = {"ns": 1e9, "us": 1e6, "ms": 1e3}[dtype.time_unit or "us"]
        return column.cast(pl.Int64) / per_second
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return column.cast(pl.String)
    if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
        raise ValueError(f"column {name!r} has type {dtype}, which cannot be profiled")
    return column


def _exact_stats(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """One pass over all rows for every scalar statistic, so polars runs them in parallel."""
    expressions: list[pl.Expr] = []
    keys: list[tuple[str, str]] = []

    def add(name: str, stat: str, expression: pl.Expr) -> None:
        keys.append((name, stat))
        expressions.append(expression.alias(f"s{len(keys)}"))  # any column name is safe

    for name, dtype in frame.schema.items():
        column = pl.col(name)
        present = column.drop_nulls()
        add(name, "missing", column.null_count())
        if dtype.is_numeric():
            finite = column.filter(column.is_finite())
            add(name, "min", finite.min())
            add(name, "max", finite.max())
            add(name, "mean", finite.mean())
            add(name, "std", finite.std())
            add(name, "infinite", present.len() - finite.len())
            if dtype.is_float():
                exact = (finite.abs() <= _MAX_EXACT_FLOAT).all()
                add(name, "whole", (finite == finite.floor()).all() & exact)
        elif dtype.is_temporal():
            add(name, "min", column.min())
            add(name, "max", column.max())
        elif dtype == pl.String:
            lengths = present.str.len_chars()
            add(name, "mean_length", lengths.mean())
            add(name, "max_length", lengths.max())
    stats: dict[str, dict[str, Any]] = {name: {} for name in frame.columns}
    if expressions:
        for (name, stat), value in zip(keys, frame.select(expressions).row(0), strict=True):
            stats[name][stat] = value
    return stats


def _counted(frame: pl.DataFrame, stats: dict[str, dict[str, Any]]) -> dict[str, list]:
    """Count the distinct values of every column, and keep the most frequent.

    One group-by per column gives both, so each column is hashed once; the columns run in
    parallel. Ties are broken by value (ascending), so the result does not depend on threads."""
    queries = []
    for name in frame.columns:
        counted = (
            frame.lazy()
            .select(pl.col(name).alias("value"))
            .drop_nulls()
            .group_by("value")
            .agg(pl.len().cast(pl.Int64).alias("count"))
        )
        top = pl.struct("value", "count").top_k_by(
            ["count", "value"], k=TOP_VALUES, reverse=[False, True]
        )
        queries.append(counted.select(pl.len().alias("distinct"), top.implode().alias("top")))
    tops: dict[str, list] = {}
    for name, result in zip(frame.columns, pl.collect_all(queries), strict=True):
        distinct, top = result.row(0)
        stats[name]["distinct"] = distinct
        top = sorted(top, key=lambda item: (-item["count"], item["value"]))
        tops[name] = [{"value": _as_text(item["value"]), "count": item["count"]} for item in top]
    return tops


# ---- kinds and per-kind statistics ------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    arrow_type: str
    values: pl.Series  # prepared, all rows
    sample: pl.Series  # prepared, the sampled rows
    stats: dict[str, Any]
    rows: int

    @property
    def present(self) -> int:
        return self.rows - self.stats["missing"]


def _profile_column(column: _Column) -> dict[str, Any]:
    stats, dtype = column.stats, column.values.dtype
    base: dict[str, Any] = {
        "name": column.name,
        "type": column.arrow_type,
        "missing": stats["missing"],
        "missing_fraction": stats["missing"] / column.rows if column.rows else 0.0,
        "distinct": stats["distinct"],
    }
    if stats["distinct"] <= 1:
        reason = "the same value on every row" if stats["distinct"] else "no values"
        return {**base, "kind": "constant", "role": "ignored", "reason": reason}
    if dtype == pl.Boolean or (stats["distinct"] <= 6 and _is_boolean_pair(column.values)):
        return {**base, "kind": "boolean", "role": "feature"}
    if dtype.is_temporal():
        return {**base, **_datetime_stats(column.values, column.sample), "role": "feature"}
    if dtype == pl.String:
        date_format = _date_format(column.sample)
        if date_format is not _NOT_DATES:
            parse = _parser(date_format)
            values = column.values.to_frame().select(parse(pl.col(column.name))).to_series()
            sample = column.sample.to_frame().select(parse(pl.col(column.name))).to_series()
            unparsed = column.present - (values.len() - values.null_count())
            return {
                **base,
                **_datetime_stats(values, sample),
                "format": date_format,
                "unparsed": unparsed,
                "role": "feature",
            }
        return {**base, **_text_kind(column)}
    if dtype.is_integer() or (dtype.is_float() and stats.get("whole") and not stats["infinite"]):
        if _is_identifier_number(column):
            return {**base, "kind": "identifier", "role": "ignored", "reason": _UNIQUE}
        return {**base, **_numeric_stats(column), "kind": "integer", "role": "feature"}
    if dtype.is_numeric():
        return {**base, **_numeric_stats(column), "kind": "numeric", "role": "feature"}
    # Anything else polars can order and count (e.g. a column of nulls only is constant above).
    return {**base, "kind": "categorical", "role": "feature"}


_UNIQUE = "a different value on every row: an identifier"
_NOT_DATES = object()


def _is_boolean_pair(values: pl.Series) -> bool:
    distinct = values.drop_nulls().unique()
    if values.dtype.is_numeric():
        return set(distinct.to_list()) == {0, 1}  # 0.0 and 1.0 too
    if values.dtype != pl.String:
        return False
    words = frozenset(distinct.str.strip_chars().str.to_lowercase().to_list())
    return words in _BOOLEAN_PAIRS


def _is_identifier_number(column: _Column) -> bool:
    if column.stats["missing"] or column.stats["distinct"] != column.rows:
        return False
    if _has_id_word(column.name):
        return True
    low, high = column.stats["min"], column.stats["max"]
    return column.rows >= MIN_IDENTIFIER_ROWS and high - low + 1 == column.rows


def _has_id_word(name: str) -> bool:
    words = _WORD_SPLIT.split(_CAMEL.sub(" ", name).lower())
    return any(word in _ID_WORDS for word in words)


def _text_kind(column: _Column) -> dict[str, Any]:
    stats = column.stats
    lengths = {"mean_length": _number(stats["mean_length"]), "max_length": stats["max_length"]}
    present = column.sample.drop_nulls()
    mean_length = stats["mean_length"] or 0.0
    distinct = stats["distinct"]
    unique = stats["missing"] == 0 and distinct == column.rows
    if (
        unique
        and mean_length <= 64
        and (_has_id_word(column.name) or column.rows >= MIN_IDENTIFIER_ROWS)
        and (present.str.contains(r"\s").mean() or 0.0) <= 0.1
    ):
        return {"kind": "identifier", "role": "ignored", "reason": _UNIQUE}
    if distinct <= max(20, 0.05 * column.present):
        return {"kind": "categorical", "role": "feature"}
    if mean_length > 20 or (present.str.count_matches(r"\s+").mean() or 0.0) >= 2:
        return {"kind": "text", "role": "feature", **lengths}
    if distinct <= 0.5 * column.present:
        return {"kind": "categorical", "role": "feature"}
    return {"kind": "text", "role": "feature", **lengths}


def _parser(date_format: str | None) -> Any:
    def parse(expression: pl.Expr) -> pl.Expr:
        return expression.str.to_datetime(date_format, strict=False)

    return parse


def _date_format(sample: pl.Series) -> Any:
    """The date format that parses at least DATETIME_SHARE of the values, or _NOT_DATES."""
    present = sample.drop_nulls()
    if present.len() == 0:
        return _NOT_DATES
    head = present.head(_DATE_PROBE_VALUES).to_frame()
    if (head.to_series().str.contains(r"\d").mean() or 0.0) < 0.5:
        return _NOT_DATES  # every format has digits: spare the parse attempts
    candidates = [f for f in _DATE_FORMATS if _parsed_share(head, f) >= 0.5]
    if not candidates:
        return _NOT_DATES
    whole = present.to_frame()
    shares = [(_parsed_share(whole, f), -rank, f) for rank, f in enumerate(candidates)]
    share, _, best = max(shares, key=lambda item: (item[0], item[1]))
    return best if share >= DATETIME_SHARE else _NOT_DATES


def _parsed_share(values: pl.DataFrame, date_format: str | None) -> float:
    name = values.columns[0]
    try:
        parsed = values.select(_parser(date_format)(pl.col(name)).is_not_null().mean())
    except pl.exceptions.PolarsError:
        return 0.0
    return float(parsed.item() or 0.0)


def _numeric_stats(column: _Column) -> dict[str, Any]:
    stats = column.stats
    low, high = stats["min"], stats["max"]
    finite = column.sample.filter(column.sample.is_finite())
    quantiles = {
        str(q): _number(finite.quantile(q, interpolation="linear")) if finite.len() else None
        for q in QUANTILES
    }
    return {
        "min": _number(low),
        "max": _number(high),
        "mean": _number(stats["mean"]),
        "std": _number(stats["std"]),
        "infinite": stats["infinite"],
        "quantiles": quantiles,
        "histogram": _histogram(finite.cast(pl.Float64), low, high),
    }


def _histogram(values: pl.Series, low: Any, high: Any) -> dict[str, list] | None:
    """BINS equal-width bins from low to high (inclusive of high in the last bin)."""
    if low is None or high is None:
        return None
    low, high = float(low), float(high)
    width = (high - low) / BINS
    edges = [low + width * i for i in range(BINS)] + [high]
    if width == 0:
        return {"edges": edges, "counts": [values.len()] + [0] * (BINS - 1)}
    bins = ((values - low) / width).floor().clip(0, BINS - 1).cast(pl.Int64)
    counted = bins.value_counts(name="count").rows()
    counts = [0] * BINS
    for index, count in counted:
        counts[index] = count
    return {"edges": edges, "counts": counts}


def _datetime_stats(values: pl.Series, sample: pl.Series) -> dict[str, Any]:
    low, high = values.min(), values.max()
    histogram = None
    if low is not None and high is not None:
        # Dates are binned as timestamps, so that short ranges get distinct edges.
        exact = pl.Datetime("us") if values.dtype == pl.Date else values.dtype
        physical = sample.drop_nulls().cast(exact).to_physical().cast(pl.Float64)
        bounds = pl.Series([low, high]).cast(exact).to_physical().cast(pl.Float64).to_list()
        counts = _histogram(physical, bounds[0], bounds[1])
        assert counts is not None
        edges = pl.Series([round(edge) for edge in counts["edges"]]).cast(pl.Int64).cast(exact)
        histogram = {"edges": [_as_text(edge) for edge in edges], "counts": counts["counts"]}
    return {
        "kind": "datetime",
        "min": _as_text(low),
        "max": _as_text(high),
        "histogram": histogram,
    }


# ---- JSON-able values -------------------------------------------------------------------------


def _number(value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value.total_seconds())
    return str(value)[:TOP_VALUE_CHARS]


_ORDER = (
    "name",
    "type",
    "kind",
    "role",
    "reason",
    "missing",
    "missing_fraction",
    "distinct",
    "top",
)


def _ordered(column: dict[str, Any]) -> dict[str, Any]:
    """Common keys first, in a fixed order, then the kind's own."""
    head = {key: column[key] for key in _ORDER if key in column}
    return {**head, **{key: value for key, value in column.items() if key not in head}}
