"""Column kinds and profiles, on realistic columns."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from atelier.datasets import formats
from atelier.datasets.profiling import KINDS, profile_table, schema_diff, schema_of

pytestmark = pytest.mark.backend_independent

ROWS = 400


def _customers(rows: int = ROWS, seed: int = 7) -> pa.Table:
    """A churn table as a customer would upload it."""
    rng = random.Random(seed)
    cities = ["Paris", "Lyon", "Marseille", "Lille", "Nantes", "Bordeaux"]
    words = ["delivery", "late", "great", "support", "price", "too", "high", "app", "slow"]
    start = dt.datetime(2023, 1, 1, 8, 0)
    return pa.table(
        {
            "row": list(range(1, rows + 1)),
            "customerId": rng.sample(range(10_000_000, 99_999_999), rows),
            "uuid": [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(rows)],
            "age": [rng.randrange(18, 90) for _ in range(rows)],
            "monthly_fee": [round(rng.uniform(5, 120), 2) for _ in range(rows)],
            "latency_ms": [rng.gauss(250, 40) for _ in range(rows)],  # unique floats
            "children": [float(rng.randrange(0, 4)) if i % 9 else None for i in range(rows)],
            "city": [rng.choice(cities) for _ in range(rows)],
            "churned": [rng.choice(["Yes", "No", "yes"]) for _ in range(rows)],
            "newsletter": [rng.choice([0, 1]) for _ in range(rows)],
            "premium": [rng.choice([True, False]) for _ in range(rows)],
            "signed_up": [start + dt.timedelta(hours=rng.randrange(20_000)) for _ in range(rows)],
            "birthday": [
                (dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20_000))).isoformat()
                for _ in range(rows)
            ],
            "last_visit": [
                (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(300))).strftime("%d/%m/%Y")
                for _ in range(rows)
            ],
            "review": [
                " ".join(rng.choice(words) for _ in range(rng.randrange(4, 15)))
                for _ in range(rows)
            ],
            "product": [f"SKU-{rng.randrange(150)}" for _ in range(rows)],
            "country": ["FR"] * rows,
            "coupon": pa.nulls(rows, pa.string()),
        }
    )


def _columns(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {column["name"]: column for column in profile["columns_profile"]}


def test_each_kind_is_detected_on_a_realistic_column() -> None:
    columns = _columns(profile_table(_customers()))

    kinds = {name: column["kind"] for name, column in columns.items()}
    assert kinds == {
        "row": "identifier",  # 1..n
        "customerId": "identifier",  # unique, id-like name
        "uuid": "identifier",
        "age": "integer",
        "monthly_fee": "numeric",
        "latency_ms": "numeric",  # unique floats are measurements, not identifiers
        "children": "integer",  # whole floats (a missing value made them floats)
        "city": "categorical",
        "churned": "boolean",  # Yes / No / yes
        "newsletter": "boolean",  # 0 / 1
        "premium": "boolean",
        "signed_up": "datetime",
        "birthday": "datetime",  # ISO dates as text
        "last_visit": "datetime",  # day-first dates as text
        "review": "text",
        "product": "categorical",  # 150 codes in 400 rows: over 5 %, under 50 %
        "country": "constant",
        "coupon": "constant",  # no values at all
    }
    assert set(kinds.values()) <= set(KINDS)
    roles = {name: column["role"] for name, column in columns.items()}
    assert [name for name, role in roles.items() if role == "ignored"] == [
        "row",
        "customerId",
        "uuid",
        "country",
        "coupon",
    ]
    assert columns["row"]["reason"] == "a different value on every row: an identifier"
    assert columns["country"]["reason"] == "the same value on every row"
    assert columns["coupon"]["reason"] == "no values"
    assert columns["birthday"]["format"] == "%Y-%m-%d"
    assert columns["last_visit"]["format"] == "%d/%m/%Y"


def test_common_fields_and_types() -> None:
    profile = profile_table(_customers())

    assert (profile["rows"], profile["columns"]) == (ROWS, 18)
    assert (profile["sampled"], profile["sample_rows"]) == (False, ROWS)
    children = _columns(profile)["children"]
    assert children["type"] == "double"
    assert children["missing"] == 45  # every 9th of 400 rows, from row 0
    assert children["missing_fraction"] == pytest.approx(45 / 400)
    assert children["distinct"] == 4
    assert [item["value"] for item in children["top"]] == sorted(
        [item["value"] for item in children["top"]],
        key=lambda value: -next(i["count"] for i in children["top"] if i["value"] == value),
    )
    assert sum(item["count"] for item in children["top"]) == 400 - 45
    assert _columns(profile)["signed_up"]["type"] == "timestamp[us]"
    assert _columns(profile)["city"]["type"] == "string"


def test_numeric_statistics() -> None:
    values = [float(v) for v in range(1, 101)] + [None, float("nan")]
    column = _columns(profile_table(pa.table({"score": values})))["score"]

    assert column["kind"] == "integer"  # whole floats
    assert column["missing"] == 2  # null and NaN alike
    assert (column["min"], column["max"]) == (1.0, 100.0)
    assert column["mean"] == pytest.approx(50.5)
    assert column["std"] == pytest.approx(29.011491975882016)
    assert column["quantiles"] == {
        "0.05": pytest.approx(5.95),
        "0.25": pytest.approx(25.75),
        "0.5": pytest.approx(50.5),
        "0.75": pytest.approx(75.25),
        "0.95": pytest.approx(95.05),
    }
    histogram = column["histogram"]
    assert len(histogram["edges"]) == 21
    assert histogram["edges"][0] == 1.0
    assert histogram["edges"][-1] == 100.0
    assert histogram["counts"] == [5] * 20
    assert column["infinite"] == 0


def test_infinities_and_nan_never_reach_the_json() -> None:
    table = pa.table(
        {
            "ratio": [1.5, float("inf"), float("-inf"), float("nan"), None, 2.5],
            "all_nan": [float("nan")] * 6,
            "single": [None, None, None, None, None, 3.25],
            "pair": [1.0, 1.0, 1.0, 1.0, 1.0, 2.0],
        }
    )

    profile = profile_table(table)
    text = json.dumps(profile, allow_nan=False)  # raises on NaN or infinity

    ratio = _columns(json.loads(text))["ratio"]
    assert ratio["kind"] == "numeric"
    assert ratio["missing"] == 2
    assert ratio["infinite"] == 2
    assert (ratio["min"], ratio["max"], ratio["mean"]) == (1.5, 2.5, 2.0)
    assert sum(ratio["histogram"]["counts"]) == 2
    assert _columns(profile)["all_nan"]["kind"] == "constant"
    assert _columns(profile)["all_nan"]["missing"] == 6
    assert _columns(profile)["single"]["kind"] == "constant"
    assert _columns(profile)["pair"]["kind"] == "integer"  # {1, 2} is not a boolean pair


def test_two_valued_numbers_are_boolean_only_for_zero_and_one() -> None:
    table = pa.table({"zero_one": [0, 1] * 20, "one_two": [1, 2] * 20})

    columns = _columns(profile_table(table))

    assert columns["zero_one"]["kind"] == "boolean"
    assert columns["one_two"]["kind"] == "integer"


def test_top_values_break_ties_by_value() -> None:
    table = pa.table({"grade": ["b", "a", "c", "b", "a", "d", "c", "e"]})

    top = _columns(profile_table(table))["grade"]["top"]

    assert top == [
        {"value": "a", "count": 2},
        {"value": "b", "count": 2},
        {"value": "c", "count": 2},
        {"value": "d", "count": 1},
        {"value": "e", "count": 1},
    ]


def test_top_values_are_at_most_ten_and_cut_long_values() -> None:
    table = pa.table({"note": ["x" * 500] * 3 + [f"n{i:02d}" for i in range(30)]})

    top = _columns(profile_table(table))["note"]["top"]

    assert len(top) == 10
    assert top[0] == {"value": "x" * 200, "count": 3}
    assert [item["value"] for item in top[1:]] == [f"n{i:02d}" for i in range(9)]


def test_datetime_profile_is_iso() -> None:
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(40)]
    table = pa.table(
        {"day": days, "at": [dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)] * 39 + [None]}
    )

    columns = _columns(profile_table(table))

    day = columns["day"]
    assert day["kind"] == "datetime"
    assert (day["min"], day["max"]) == ("2024-01-01", "2024-02-09")
    assert day["histogram"]["edges"][0] == "2024-01-01T00:00:00"
    assert day["histogram"]["edges"][-1] == "2024-02-09T00:00:00"
    assert sum(day["histogram"]["counts"]) == 40
    assert columns["at"]["kind"] == "constant"


def test_text_dates_report_their_range_and_unparsed_values() -> None:
    values = [f"2024-03-{d:02d} 10:15:00" for d in range(1, 31)] + ["not a date"]
    column = _columns(profile_table(pa.table({"when": values})))["when"]

    assert column["kind"] == "datetime"
    assert column["format"] == "%Y-%m-%d %H:%M:%S"
    assert column["unparsed"] == 1
    assert (column["min"], column["max"]) == ("2024-03-01T10:15:00", "2024-03-30T10:15:00")


def test_mostly_unparseable_dates_are_not_dates() -> None:
    values = [f"2024-03-{d:02d}" for d in range(1, 28)] + ["soon", "never", "later"]
    column = _columns(profile_table(pa.table({"due": values})))["due"]

    assert column["kind"] != "datetime"


def test_text_kinds() -> None:
    rng = random.Random(3)
    rows = 1000
    table = pa.table(
        {
            # 150 distinct short labels in 1000 rows: over 5 %, under 50 %: categorical.
            "job": [f"job-{rng.randrange(150)}" for _ in range(rows)],
            # Mostly distinct short labels: text (not unique, so not an identifier).
            "nickname": [f"u{rng.randrange(100_000)}" for _ in range(rows)],
            # Long values.
            "title": [f"{'abcdefghij' * 3}{rng.randrange(100_000)}" for _ in range(rows)],
            # Unique but wordy: free text, not an identifier.
            "sentence": [f"we met on day {i} at noon" for i in range(rows)],
        }
    )

    columns = _columns(profile_table(table))

    assert columns["job"]["kind"] == "categorical"
    assert columns["nickname"]["kind"] == "text"
    assert columns["title"]["kind"] == "text"
    assert columns["title"]["max_length"] == 35
    assert columns["sentence"]["kind"] == "text"
    assert columns["sentence"]["mean_length"] == pytest.approx(
        sum(len(f"we met on day {i} at noon") for i in range(rows)) / rows
    )


def test_identifier_rules_are_conservative() -> None:
    table = pa.table(
        {
            "order_id": [5, 17, 3, 99],  # id-like name: identifier at any size
            "rank": [4, 1, 3, 2],  # a 1..n permutation, but too few rows to say
            "score": [10, 30, 20, 40],
            "code": ["A1", "B2", "C3", "D4"],  # unique text, 4 rows: not enough
        }
    )

    kinds = {c["name"]: c["kind"] for c in profile_table(table)["columns_profile"]}

    assert kinds == {
        "order_id": "identifier",
        "rank": "integer",
        "score": "integer",
        "code": "categorical",
    }


def test_unique_integers_with_gaps_and_a_plain_name_are_integers() -> None:
    values = list(range(0, 300, 3))  # unique, but not a contiguous range
    column = _columns(profile_table(pa.table({"amount": values})))["amount"]

    assert column["kind"] == "integer"


def test_missing_values_prevent_identifier() -> None:
    values = [*range(1, 50), None]
    column = _columns(profile_table(pa.table({"user_id": values})))["user_id"]

    assert column["kind"] == "integer"


def test_counts_are_exact_beyond_the_sample() -> None:
    rows = 50_000
    table = pa.table(
        {
            "value": [None if i % 10 == 0 else i % 1000 for i in range(rows)],
            "label": [f"l{i % 37}" for i in range(rows)],
        }
    )

    profile = profile_table(table, sample_rows=1_000, seed=1)

    assert (profile["rows"], profile["sampled"], profile["sample_rows"]) == (rows, True, 1_000)
    value = _columns(profile)["value"]
    assert value["missing"] == 5_000
    assert value["distinct"] == 900  # multiples of 10 are always missing
    assert (value["min"], value["max"]) == (1, 999)
    # 50,000 = 37 x 1,351 + 13: l0 to l12 appear once more; ties go by value, as text.
    assert _columns(profile)["label"]["top"] == [
        {"value": label, "count": 1_352}
        for label in ["l0", "l1", "l10", "l11", "l12", "l2", "l3", "l4", "l5", "l6"]
    ]
    # The histogram counts the sampled values only (about 90 % of them are present).
    assert 850 <= sum(value["histogram"]["counts"]) <= 950


def test_same_seed_same_profile() -> None:
    table = _customers(rows=3_000)

    first = profile_table(table, sample_rows=500, seed=42)
    second = profile_table(table, sample_rows=500, seed=42)
    other_seed = profile_table(table, sample_rows=500, seed=43)

    assert json.dumps(first) == json.dumps(second)
    assert first["sampled"] is True
    latency = (_columns(first)["latency_ms"], _columns(other_seed)["latency_ms"])
    assert latency[0]["quantiles"] != latency[1]["quantiles"]  # drawn from another sample
    assert latency[0]["mean"] == latency[1]["mean"]  # exact


def test_profile_is_plain_json() -> None:
    profile = profile_table(_customers())

    assert json.loads(json.dumps(profile, allow_nan=False)) == profile


def test_empty_table() -> None:
    profile = profile_table(
        pa.table({"a": pa.array([], pa.int64()), "b": pa.array([], pa.string())})
    )

    assert (profile["rows"], profile["columns"]) == (0, 2)
    assert [c["kind"] for c in profile["columns_profile"]] == ["constant", "constant"]
    assert profile["columns_profile"][0]["missing_fraction"] == 0.0
    assert profile["columns_profile"][0]["top"] == []


def test_duplicate_column_names_are_refused() -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])

    with pytest.raises(ValueError, match="unique"):
        profile_table(table)


def test_uploaded_csv_profile(tmp_path: Path) -> None:
    rows = ["id;signup;plan;amount;churn"] + [
        f"{i};2024-01-{1 + i % 28:02d}T09:30:00;{'pro' if i % 3 else 'free'};{i * 1.5};"
        f"{'true' if i % 4 else 'false'}"
        for i in range(1, 201)
    ]
    path = tmp_path / "upload"
    path.write_text("\n".join(rows) + "\n")
    limits = formats.Limits(max_rows=1000, max_columns=10, max_xlsx_uncompressed_bytes=1)

    profile = profile_table(formats.read_table(path, limits).table)

    assert schema_of(profile) == [
        {"name": "id", "kind": "identifier", "type": "int64"},
        {"name": "signup", "kind": "datetime", "type": "timestamp[s]"},
        {"name": "plan", "kind": "categorical", "type": "string"},
        {"name": "amount", "kind": "numeric", "type": "double"},
        {"name": "churn", "kind": "boolean", "type": "bool"},
    ]


# ---- schema -----------------------------------------------------------------------------------


def test_schema_of_keeps_column_order() -> None:
    profile = profile_table(pa.table({"b": [1.5, 2.5], "a": ["x", "y"]}))

    assert schema_of(profile) == [
        {"name": "b", "kind": "numeric", "type": "double"},
        {"name": "a", "kind": "categorical", "type": "string"},
    ]


def test_schema_diff() -> None:
    old = [
        {"name": "id", "kind": "identifier", "type": "int64"},
        {"name": "age", "kind": "integer", "type": "int64"},
        {"name": "city", "kind": "categorical", "type": "string"},
        {"name": "fax", "kind": "text", "type": "string"},
    ]
    new = [
        {"name": "id", "kind": "identifier", "type": "int64"},
        {"name": "age", "kind": "numeric", "type": "double"},
        {"name": "city", "kind": "categorical", "type": "string"},
        {"name": "email", "kind": "identifier", "type": "string"},
    ]

    assert schema_diff(old, new) == {
        "added": ["email"],
        "removed": ["fax"],
        "changed": [
            {
                "name": "age",
                "from": {"kind": "integer", "type": "int64"},
                "to": {"kind": "numeric", "type": "double"},
            }
        ],
    }
    assert schema_diff(new, new) == {"added": [], "removed": [], "changed": []}


# ---- performance ------------------------------------------------------------------------------


def _wide_table(rows: int) -> pa.Table:
    """20 mixed columns of `rows` rows, built in polars (fast, deterministic)."""
    index = pl.int_range(0, rows, eager=True)

    def hashed(salt: int, modulo: int) -> pl.Series:
        return (index.hash(salt) % modulo).cast(pl.Int64)

    cities = pl.Series(["Paris", "Lyon", "Lille", "Nantes", "Nice", "Rennes", "Brest"])
    words = pl.Series(["good", "bad", "service", "slow", "the", "very", "price", "late"])
    columns: dict[str, pl.Series] = {"id": index}
    for i in range(8):
        columns[f"f{i}"] = hashed(i, 1_000_000).cast(pl.Float64) / 7.0
    for i in range(3):
        columns[f"i{i}"] = hashed(10 + i, 10 ** (i + 2))
    for i in range(3):
        columns[f"c{i}"] = cities.gather(hashed(20 + i, 7))
    for i in range(2):
        parts = [words.gather(hashed(30 + i, 8)), words.gather(hashed(40 + i, 8))]
        number = hashed(50 + i, 100_000).cast(pl.String)
        columns[f"t{i}"] = pl.select(
            pl.concat_str([*parts, number, *parts], separator=" ")
        ).to_series()
    columns["b"] = hashed(60, 2) == 0
    columns["ts"] = (index * 60_000_000 + 1_700_000_000_000_000).cast(pl.Datetime("us"))
    columns["sd"] = (index % 3650).cast(pl.Int32).cast(pl.Date).dt.strftime("%Y-%m-%d")
    return pl.DataFrame(columns).to_arrow()


@pytest.mark.skipif(
    not os.environ.get("ATELIER_PROFILE_BENCH"), reason="a measurement: ATELIER_PROFILE_BENCH=1"
)
def test_profiles_a_million_rows_quickly() -> None:
    table = _wide_table(1_000_000)
    profile_table(table)  # warm up

    started = time.perf_counter()
    profile = profile_table(table)
    elapsed = time.perf_counter() - started

    print(f"profile_table, 1,000,000 x 20: {elapsed:.2f} s")
    assert [c["kind"] for c in profile["columns_profile"]].count("numeric") == 8
    assert elapsed < 5
