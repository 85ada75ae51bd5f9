"""JSON held to its bounds (depth, integer digits, no NUL) and never taken for another format,
at the limits and past them."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atelier.datasets import formats, json_bounds
from atelier.datasets.formats import Limits, read_table

pytestmark = pytest.mark.backend_independent

LIMITS = Limits(max_rows=100_000, max_columns=50, max_xlsx_uncompressed_bytes=20_000_000)


def _read(tmp_path: Path, content: bytes | str, name: str = "") -> formats.Parsed:
    path = tmp_path / "upload"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return read_table(path, LIMITS, name=name)


def _refused(tmp_path: Path, content: bytes | str, name: str = "") -> formats.DatasetFileError:
    with pytest.raises(formats.DatasetFileError) as caught:
        _read(tmp_path, content, name)
    return caught.value


def _nested(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_values_nested_to_the_limit_are_read_and_one_more_level_is_refused(
    tmp_path: Path, fmt: str
) -> None:
    def content(levels: int) -> str:
        record = f'{{"id": 1, "deep": {_nested(levels)}}}'
        return f"[{record}]" if fmt == "json" else f'{record}\n{{"id": 2, "deep": null}}\n'

    parsed = _read(tmp_path, content(json_bounds.MAX_DEPTH))
    assert parsed.details["json_encoded"] == ["deep"]
    assert json.loads(parsed.table.column("deep")[0].as_py()) == json.loads(
        _nested(json_bounds.MAX_DEPTH)
    )

    error = _refused(tmp_path, content(json_bounds.MAX_DEPTH + 1))
    assert (error.slug, error.status) == ("malformed-json", 422)
    assert f"{json_bounds.MAX_DEPTH + 1} levels deep" in error.detail


def test_a_deep_line_that_polars_also_refuses_is_located(tmp_path: Path) -> None:
    content = '{"a": 1}\n{"a": 2}\n{"a": ' + _nested(5_000) + "}\n"

    error = _refused(tmp_path, content)

    assert error.extra == {"line": 3}
    assert "5000 levels deep" in error.detail


def test_brackets_inside_strings_are_not_nesting() -> None:
    assert json_bounds.depth('{"a": "[[[[{{{{", "b": "\\"]]"}') == 1
    assert json_bounds.depth('{"a": [{"b": []}]}') == 4


def test_integers_up_to_38_digits_are_kept_and_longer_ones_refused(tmp_path: Path) -> None:
    longest = "9" * json_bounds.MAX_DIGITS
    parsed = _read(tmp_path, f'{{"n": 1}}\n{{"n": {longest}}}\n')
    assert parsed.table.column("n").to_pylist() == ["1", longest]

    error = _refused(tmp_path, f'{{"n": 1}}\n{{"n": -{longest}9}}\n')
    assert error.extra == {"line": 2}
    assert f"{json_bounds.MAX_DIGITS + 1} digits" in error.detail


def test_an_integer_polars_would_make_null_is_refused(tmp_path: Path) -> None:
    # 2**128 - 1: 39 digits, past Int128; polars read it as null.
    error = _refused(tmp_path, '[{"n": 1}, {"n": 340282366920938463463374607431768211455}]')

    assert error.extra == {"line": 1}
    assert "an integer of 39 digits; at most 38" in error.detail


def test_long_digit_runs_in_strings_and_floats_are_not_integers(tmp_path: Path) -> None:
    digits = "1234567890" * 5
    records = [
        f'{{"s": "{digits}", "t": "a \\"{digits}\\" b", "f": {digits}.5, "g": 1.{digits}}}',
        f'{{"s": "x", "t": "\\\\", "f": 2e-{digits[:3]}, "g": 2.5}}',
    ]
    parsed = _read(tmp_path, "[" + ",\n".join(records) + "]")

    assert parsed.table.column("s").to_pylist() == [digits, "x"]
    assert parsed.table.column("t").to_pylist() == [f'a "{digits}" b', "\\"]


def test_a_long_integer_deep_in_a_minified_file_is_found_across_chunks(tmp_path: Path) -> None:
    record = '{"s": "a \\" quoted", "n": 12345}'
    count = json_bounds.CHUNK_BYTES // len(record) + 10
    minified = "[" + ",".join([record] * count) + ',{"s": "x", "n": ' + "7" * 45 + "}]"
    assert len(minified) > json_bounds.CHUNK_BYTES

    assert json_bounds.first_problem(_path(tmp_path, minified)) == (1, json_bounds._too_long(45))


@pytest.mark.parametrize("split", range(1, 46, 11))
def test_a_digit_run_cut_by_a_chunk_is_whole(tmp_path: Path, split: int) -> None:
    head = '[{"n": 1}, ' + " " * (json_bounds.CHUNK_BYTES - len('[{"n": 1}, ') - 7 - split)
    content = head + '{"n": ' + "9" * 45 + "}]"
    assert content.index("9" * 45) == json_bounds.CHUNK_BYTES - split - 1

    assert json_bounds.first_problem(_path(tmp_path, content)) == (1, json_bounds._too_long(45))


def test_long_fractions_are_numbers(tmp_path: Path) -> None:
    parsed = _read(tmp_path, '{"x": 3.14159265358979323846264338327950288419716939937510}\n')

    assert parsed.table.column("x").to_pylist() == [pytest.approx(3.141592653589793)]


def test_integers_past_64_bits_inside_nested_values_stay_digits(tmp_path: Path) -> None:
    parsed = _read(
        tmp_path, '[{"ref": {"n": 123456789012345678901234}, "l": [-18446744073709551617]}]'
    )

    assert json.loads(parsed.table.column("ref")[0].as_py()) == {"n": "123456789012345678901234"}
    assert json.loads(parsed.table.column("l")[0].as_py()) == ["-18446744073709551617"]


LATER = "".join(f'{{"s": "row {i}"}}\n' for i in range(5_000))  # past the probe


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ('[{"a\\u0000b": 1}]', 1),  # polars panicked on this name
        ('[\n{"s": {"t": "a\\u0000"}}]', 2),
        ('{"s": "x"}\n{"s": "\\\\\\u0000"}\n', 2),  # an escaped backslash, then the NUL
        (LATER.encode() + b'{"s": "a\x00b"}\n', 5_001),  # a raw NUL, past the probe
    ],
)
def test_a_nul_character_is_refused_wherever_it_is(
    tmp_path: Path, content: str | bytes, line: int
) -> None:
    error = _refused(tmp_path, content)

    assert (error.slug, error.status) == ("malformed-json", 422)
    assert error.extra == {"line": line}
    assert "NUL" in error.detail


def test_an_escaped_backslash_before_u0000_is_text(tmp_path: Path) -> None:
    parsed = _read(tmp_path, '[{"path": "C:\\\\u0000"}]')

    assert parsed.table.column("path").to_pylist() == ["C:\\u0000"]


def test_a_nul_escape_cut_by_a_read_chunk_is_found_on_its_line(tmp_path: Path) -> None:
    lines = '{"s": "x"}\n' * 10
    padding = json_bounds.CHUNK_BYTES - len(lines) - len('{"s": "') - 3
    content = lines + '{"s": "' + "y" * padding + '\\u0000"}\n'
    assert content.index("\\u0000") == json_bounds.CHUNK_BYTES - 3

    assert json_bounds.first_problem(_path(tmp_path, content)) == (11, json_bounds.NUL)


def _path(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "scanned"
    path.write_text(content)
    return path


def test_json_with_comments_is_malformed_json_whatever_its_name(tmp_path: Path) -> None:
    for content in ('// export\n[{"a": 1}]\n', '/* export\n */ {"a": 1}\n{"a": 2}\n'):
        error = _refused(tmp_path, content, name="data.txt")
        assert error.slug == "malformed-json"
        assert "comments" in error.detail


@pytest.mark.parametrize("name", ["data.json", "DATA.JSONL", "x.ndjson"])
def test_text_named_json_that_is_not_json_is_malformed_json(tmp_path: Path, name: str) -> None:
    error = _refused(tmp_path, "a,b\n1,2\n", name=name)

    assert (error.slug, error.status) == ("malformed-json", 422)
    assert repr(name) in error.detail


def test_the_same_text_named_csv_is_a_table(tmp_path: Path) -> None:
    assert _read(tmp_path, "a,b\n1,2\n", name="data.csv").format == "csv"


def test_a_binary_format_named_json_is_still_recognised(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    pq.write_table(pa.table({"a": [1, 2]}), path)

    assert read_table(path, LIMITS, name="data.json").format == "parquet"
