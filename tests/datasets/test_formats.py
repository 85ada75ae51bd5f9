"""Reading uploaded data files: detection by content, encodings, and every refusal."""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import json
import os
import resource
import time
import tracemalloc
import zipfile
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atelier.core.errors import InvalidInput, UnsupportedMediaType
from atelier.datasets import formats
from atelier.datasets.formats import Limits, read_table

pytestmark = pytest.mark.backend_independent

LIMITS = Limits(max_rows=100_000, max_columns=50, max_xlsx_uncompressed_bytes=20_000_000)


def _file(tmp_path: Path, content: bytes | str, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _read(tmp_path: Path, content: bytes | str, limits: Limits = LIMITS) -> formats.Parsed:
    return read_table(_file(tmp_path, content), limits)


def _refused(
    tmp_path: Path, content: bytes | str, limits: Limits = LIMITS
) -> formats.DatasetFileError:
    with pytest.raises(formats.DatasetFileError) as caught:
        _read(tmp_path, content, limits)
    return caught.value


def _xlsx(path: Path, rows: list[list], *, title: str = "Sales", more_sheets: int = 0) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    for n in range(more_sheets):
        workbook.create_sheet(f"Other{n}").append(["ignored"])
    workbook.save(path)
    return path


# ---- delimited text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delimiter", "fmt"), [(",", "csv"), (";", "csv"), ("\t", "tsv"), ("|", "csv")]
)
def test_delimiter_is_detected_from_content(tmp_path: Path, delimiter: str, fmt: str) -> None:
    rows = [["city", "price", "note"], ["Paris", "12.5", "a, b; c"], ["Lyon", "3", "x|y"]]
    # Fields holding another candidate delimiter are quoted, as any CSV writer would.
    lines = [
        delimiter.join(f'"{v}"' if any(d in v for d in ",;\t|") else v for v in row) for row in rows
    ]
    parsed = _read(tmp_path, "\n".join(lines) + "\n")

    assert parsed.format == fmt
    assert parsed.details["delimiter"] == delimiter
    assert parsed.details["quote"] == '"'
    assert parsed.details["encoding"] == "utf-8"
    assert parsed.table.column_names == ["city", "price", "note"]
    assert parsed.table.column("price").to_pylist() == [12.5, 3.0]
    assert parsed.table.column("note").to_pylist() == ["a, b; c", "x|y"]


def test_quoted_fields_keep_delimiters_newlines_and_quotes(tmp_path: Path) -> None:
    content = (
        'id,comment,amount\n1,"Hello, world",10\n2,"two\nlines, and ""quotes""",20\n3,plain,30\n'
    )
    parsed = _read(tmp_path, content)

    assert parsed.table.num_rows == 3
    assert parsed.table.column("comment").to_pylist() == [
        "Hello, world",
        'two\nlines, and "quotes"',
        "plain",
    ]
    assert parsed.table.column("amount").to_pylist() == [10, 20, 30]


def test_single_quotes_are_detected_when_they_split_rows_consistently(tmp_path: Path) -> None:
    parsed = _read(tmp_path, "'name';'city'\n'Smith; J.';'Paris'\n'Doe';'Lyon'\n")

    assert (parsed.details["delimiter"], parsed.details["quote"]) == (";", "'")
    assert parsed.table.column("name").to_pylist() == ["Smith; J.", "Doe"]


def test_semicolon_file_with_decimal_commas_is_semicolon_separated(tmp_path: Path) -> None:
    parsed = _read(tmp_path, "a;b\n1,5;2,25\n3,0;4,75\n")

    assert parsed.details["delimiter"] == ";"
    assert parsed.table.column("a").to_pylist() == ["1,5", "3,0"]


def test_cp1252_text_is_decoded(tmp_path: Path) -> None:
    parsed = _read(tmp_path, "produit;prix\ncafé;3 €\nthé;4 €\n".encode("cp1252"))

    assert parsed.details["encoding"] == "cp1252"
    assert parsed.details["bom"] is False
    assert parsed.table.column("produit").to_pylist() == ["café", "thé"]
    assert parsed.table.column("prix").to_pylist() == ["3 €", "4 €"]


def test_cp1252_bytes_after_the_probe_switch_the_whole_file_to_cp1252(tmp_path: Path) -> None:
    ascii_rows = "".join(f"row{i},plain\n" for i in range(10_000))  # well past the probe
    content = ("name,label\n" + ascii_rows + "last,déjà vu\n").encode("cp1252")
    assert len(content) > formats.PROBE_BYTES

    parsed = _read(tmp_path, content)

    assert parsed.details["encoding"] == "cp1252"
    assert parsed.table.num_rows == 10_001
    assert parsed.table.column("label").to_pylist()[-1] == "déjà vu"


def test_utf8_multibyte_character_cut_by_the_probe_is_still_utf8(tmp_path: Path) -> None:
    filler = "x" * (formats.PROBE_BYTES - len("name\n") - 1)
    content = ("name\n" + filler + "é\n" + "ü\n").encode()  # é straddles the probe's end
    assert content[: formats.PROBE_BYTES].decode("utf-8", errors="ignore").endswith("x")

    parsed = _read(tmp_path, content)

    assert parsed.details["encoding"] == "utf-8"
    assert parsed.table.column("name").to_pylist()[-1] == "ü"


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    parsed = _read(tmp_path, codecs.BOM_UTF8 + "Région,n\nÎle-de-France,1\n".encode())

    assert parsed.details["encoding"] == "utf-8"
    assert parsed.details["bom"] is True
    assert parsed.table.column_names == ["Région", "n"]
    assert parsed.table.column("Région").to_pylist() == ["Île-de-France"]


@pytest.mark.parametrize(
    ("bom", "codec", "encoding"),
    [
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
    ],
)
def test_utf16_with_bom_is_decoded(tmp_path: Path, bom: bytes, codec: str, encoding: str) -> None:
    # Excel's "Unicode text" export: UTF-16 with a BOM, tab-separated.
    parsed = _read(tmp_path, bom + "nom\tmontant\nÉlodie\t12\n€uro\t7\n".encode(codec))

    assert parsed.format == "tsv"
    assert parsed.details["encoding"] == encoding
    assert parsed.details["bom"] is True
    assert parsed.table.column_names == ["nom", "montant"]
    assert parsed.table.column("nom").to_pylist() == ["Élodie", "€uro"]
    assert parsed.table.column("montant").to_pylist() == [12, 7]


def test_utf16_without_bom_is_refused_as_binary(tmp_path: Path) -> None:
    error = _refused(tmp_path, "a,b\n1,2\n".encode("utf-16-le"))

    assert (error.slug, error.status) == ("unrecognized-format", 415)


def test_missing_markers_are_nulls_in_text_columns(tmp_path: Path) -> None:
    parsed = _read(tmp_path, "name,score\nAnn,1\n,NA\nNULL,3\nBob,\n")

    assert parsed.table.column("name").to_pylist() == ["Ann", None, None, "Bob"]
    assert parsed.table.column("score").to_pylist() == [1, None, 3, None]


def test_single_column_file_has_no_delimiter(tmp_path: Path) -> None:
    parsed = _read(tmp_path, "value\n1\n2\n3\n")

    assert parsed.table.column_names == ["value"]
    assert parsed.table.column("value").to_pylist() == [1, 2, 3]


def test_bracketed_header_is_text_not_json(tmp_path: Path) -> None:
    parsed = _read(tmp_path, "[id],[name]\n1,Ann\n")  # SQL Server's export style

    assert parsed.format == "csv"
    assert parsed.table.column_names == ["[id]", "[name]"]


def test_detection_ignores_the_file_name(tmp_path: Path) -> None:
    path = _file(tmp_path, '[{"a": 1}, {"a": 2}]', name="data.csv")

    assert read_table(path, LIMITS).format == "json"


# ---- column names -----------------------------------------------------------------------------


def test_empty_duplicate_and_hostile_names_are_cleaned(tmp_path: Path) -> None:
    long_name = "n" * 300
    header = ',price,price,price_2,"x\x1b[31m\u202eevil\x07",' + long_name + ",  "
    parsed = _read(tmp_path, header + "\n1,2,3,4,5,6,7\n")

    assert parsed.table.column_names == [
        "column_1",
        "price",
        "price_3",  # price_2 is taken by the next column's own name
        "price_2",
        "x[31mevil",
        "n" * 200,
        "column_7",
    ]
    assert parsed.details["renamed"] == {
        "column_1": "",
        "price_3": "price",
        "x[31mevil": "x\x1b[31m\u202eevil\x07",
        "n" * 200: long_name,
        "column_7": "  ",
    }


def test_duplicate_long_names_stay_within_the_length_limit() -> None:
    names, renamed = formats.clean_column_names(["a" * 250, "a" * 250])

    assert names == ["a" * 200, "a" * 198 + "_2"]
    assert renamed == {"a" * 200: "a" * 250, "a" * 198 + "_2": "a" * 250}


# ---- JSON -------------------------------------------------------------------------------------


def test_json_array_of_records(tmp_path: Path) -> None:
    records = [
        {"id": 1, "name": "Ann", "score": 1.5, "tags": ["a", "b"], "address": {"city": "Paris"}},
        {"id": 2, "name": "Bob", "score": None, "tags": None, "extra": True},
    ]
    parsed = _read(tmp_path, "  \n" + json.dumps(records, indent=2))

    assert parsed.format == "json"
    assert parsed.table.column_names == ["id", "name", "score", "tags", "address", "extra"]
    assert parsed.table.schema.field("name").type == pa.string()  # not large_string
    assert parsed.table.column("score").to_pylist() == [1.5, None]
    # Nested values become JSON text; a missing one stays missing.
    assert parsed.details["json_encoded"] == ["tags", "address"]
    assert parsed.table.column("tags").to_pylist() == ['["a","b"]', None]
    assert json.loads(parsed.table.column("address")[0].as_py()) == {"city": "Paris"}
    assert parsed.table.column("extra").to_pylist() == [None, True]


def test_json_integers_past_64_bits_are_kept_as_text(tmp_path: Path) -> None:
    parsed = _read(tmp_path, '[{"n": 1}, {"n": 123456789012345678901234}]')

    assert parsed.table.column("n").to_pylist() == ["1", "123456789012345678901234"]


def test_json_lines(tmp_path: Path) -> None:
    content = '{"a": 1, "b": "x"}\n\n{"a": 2, "c": false}\n{"a": 3, "b": "z"}\n'
    parsed = _read(tmp_path, content)

    assert parsed.format == "jsonl"
    assert parsed.table.column_names == ["a", "b", "c"]
    assert parsed.table.column("a").to_pylist() == [1, 2, 3]
    assert parsed.table.column("c").to_pylist() == [None, False, None]


def test_json_lines_with_utf8_bom(tmp_path: Path) -> None:
    parsed = _read(tmp_path, codecs.BOM_UTF8 + '{"é": 1}\n{"é": 2}\n'.encode())

    assert parsed.format == "jsonl"
    assert parsed.details["bom"] is True
    assert parsed.table.column("é").to_pylist() == [1, 2]


def test_one_pretty_printed_json_object_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, json.dumps({"data": [{"a": 1}], "total": 1}, indent=2))

    assert error.slug == "malformed-json"
    assert "a JSON object; expected an array of records or JSON Lines" in error.detail


def test_json_lines_with_a_broken_line_names_the_line(tmp_path: Path) -> None:
    error = _refused(tmp_path, '{"a": 1}\n{"a": 2}\n{"a": 3,,}\n{"a": 4}\n')

    assert (error.slug, error.status) == ("malformed-json", 422)
    assert error.extra == {"line": 3}
    assert "Line 3" in error.detail


def test_json_lines_with_a_non_object_line_names_the_line(tmp_path: Path) -> None:
    error = _refused(tmp_path, '{"a": 1}\n[1, 2]\n')

    assert error.extra == {"line": 2}
    assert "list" in error.detail


def test_json_array_of_scalars_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, "[1, 2, 3]")

    assert error.slug == "malformed-json"
    assert "records" in error.detail


def test_truncated_json_array_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, '[{"a": 1}, {"a": ')

    assert error.slug == "malformed-json"


def test_json_must_be_utf8(tmp_path: Path) -> None:
    error = _refused(tmp_path, '[{"name": "café"}]'.encode("cp1252"))

    assert error.slug == "malformed-json"
    assert "UTF-8" in error.detail


def test_json_records_without_fields_have_no_columns(tmp_path: Path) -> None:
    error = _refused(tmp_path, "[{}, {}]")

    assert (error.slug, error.status) == ("no-columns", 422)


def test_empty_json_array_is_refused(tmp_path: Path) -> None:
    assert _refused(tmp_path, "[]").slug == "no-columns"


# ---- Parquet ----------------------------------------------------------------------------------


def test_parquet(tmp_path: Path) -> None:
    table = pa.table(
        {
            "city": pa.array(["Paris", "Lyon", "Paris"]).dictionary_encode(),
            "name": pa.array(["a", "b", "c"], pa.large_string()),
            "when": pa.array([dt.datetime(2024, 1, d) for d in (1, 2, 3)], pa.timestamp("ms")),
            "values": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
            "": [1, 2, 3],
        }
    )
    path = tmp_path / "upload"
    pq.write_table(table, path)

    parsed = read_table(path, LIMITS)

    assert parsed.format == "parquet"
    assert parsed.details["row_groups"] == 1
    assert parsed.table.column_names == ["city", "name", "when", "values", "column_5"]
    assert parsed.table.schema.field("city").type == pa.string()
    assert parsed.table.schema.field("name").type == pa.string()
    assert parsed.table.schema.field("when").type == pa.timestamp("ms")
    assert parsed.table.column("city").to_pylist() == ["Paris", "Lyon", "Paris"]
    assert parsed.table.column("values").to_pylist() == ["[1,2]", "[]", None]
    assert parsed.details["renamed"] == {"column_5": ""}


def test_parquet_row_limit_is_checked_from_metadata(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    pq.write_table(pa.table({"a": list(range(101))}), path)

    with pytest.raises(formats.TooManyRows) as caught:
        read_table(path, Limits(max_rows=100, max_columns=5, max_xlsx_uncompressed_bytes=1))

    assert caught.value.extra == {"limit": 100, "rows": 101}


def test_truncated_parquet_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "full"
    pq.write_table(pa.table({"a": list(range(1000))}), path)
    content = path.read_bytes()

    assert _refused(tmp_path, content[: len(content) // 2]).slug == "malformed-parquet"
    # Magic at both ends, garbage in between.
    assert _refused(tmp_path, b"PAR1" + os.urandom(200) + b"PAR1").slug == "malformed-parquet"


# ---- XLSX -------------------------------------------------------------------------------------


def test_xlsx_first_sheet(tmp_path: Path) -> None:
    path = _xlsx(
        tmp_path / "upload",
        [
            ["id", "name", "signed", None, "name", "amount"],
            [1, "Ann", dt.datetime(2024, 3, 1, 10, 30), None, "x", 12.5],
            [2, "Bob", dt.datetime(2024, 3, 2, 11, 0), None, "y", 7],
        ],
        title="Ventes 2024",
        more_sheets=2,
    )

    parsed = read_table(path, LIMITS)

    assert parsed.format == "xlsx"
    assert parsed.details["sheet"] == "Ventes 2024"
    assert parsed.details["sheets"] == 3
    assert parsed.table.column_names == ["id", "name", "signed", "column_4", "name_2", "amount"]
    assert parsed.details["renamed"] == {"column_4": "", "name_2": "name"}
    assert parsed.table.column("id").to_pylist() == [1, 2]
    assert parsed.table.column("signed").to_pylist() == [
        dt.datetime(2024, 3, 1, 10, 30),
        dt.datetime(2024, 3, 2, 11, 0),
    ]
    assert parsed.table.column("amount").to_pylist() == [12.5, 7.0]
    assert parsed.table.schema.field("name").type == pa.string()


def test_xlsx_odd_value_late_in_a_column_is_not_lost(tmp_path: Path) -> None:
    rows = [["code"]] + [[n] for n in range(300)] + [["N/A-7"]]
    parsed = read_table(_xlsx(tmp_path / "upload", rows), LIMITS)

    assert parsed.table.num_rows == 301
    assert parsed.table.column("code").to_pylist()[-1] == "N/A-7"


def test_xlsx_header_only_has_no_rows(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "upload", [["a", "b"]])

    with pytest.raises(formats.NoRows):
        read_table(path, LIMITS)


def test_xlsx_empty_sheet_is_empty(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "upload", [])

    with pytest.raises(formats.EmptyFile) as caught:
        read_table(path, LIMITS)

    assert "Sales" in caught.value.detail


def test_xlsx_too_many_columns_is_refused_from_the_header(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "upload", [[f"c{i}" for i in range(60)], list(range(60))])

    with pytest.raises(formats.TooManyColumns) as caught:
        read_table(path, LIMITS)

    assert caught.value.extra == {"limit": 50, "columns": 60}


def _zip_bomb(path: Path, *, megabytes: int) -> Path:
    """An .xlsx-looking archive with one huge entry of zeros, written in 1 MiB pieces."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        zeros = bytes(1024 * 1024)
        with archive.open("xl/worksheets/sheet1.xml", "w") as entry:
            for _ in range(megabytes):
                entry.write(zeros)
    return path


def test_zip_bomb_is_refused_from_the_directory_without_decompressing(tmp_path: Path) -> None:
    path = _zip_bomb(tmp_path / "upload", megabytes=200)
    assert path.stat().st_size < 2_000_000

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(formats.XlsxTooLarge) as caught:
        read_table(path, LIMITS)
    elapsed = time.perf_counter() - started
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before

    assert (caught.value.slug, caught.value.status) == ("xlsx-too-large", 422)
    assert caught.value.extra["limit"] == LIMITS.max_xlsx_uncompressed_bytes
    assert caught.value.extra["uncompressed_bytes"] > 200 * 1024 * 1024
    assert elapsed < 0.5  # inflating 200 MB takes longer
    assert python_peak < 1_000_000
    assert rss_growth_kib < 50 * 1024


def test_zip_entry_compressing_too_well_is_refused(tmp_path: Path) -> None:
    path = _zip_bomb(tmp_path / "upload", megabytes=5)
    generous = Limits(max_rows=10, max_columns=10, max_xlsx_uncompressed_bytes=10**9)

    with pytest.raises(formats.XlsxTooLarge) as caught:
        read_table(path, generous)

    assert caught.value.extra["entry"] == "xl/worksheets/sheet1.xml"
    assert caught.value.extra["ratio"] > 100


def test_corrupt_xlsx_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "not xml at all")
        archive.writestr("xl/workbook.xml", "<workbook")

    with pytest.raises(formats.MalformedXlsx):
        read_table(path, LIMITS)


def test_ordinary_zip_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.csv", "a,b\n1,2\n")

    with pytest.raises(formats.UnrecognizedFormat) as caught:
        read_table(path, LIMITS)

    assert caught.value.status == 415
    assert "ZIP archive" in caught.value.detail


# ---- refusals ---------------------------------------------------------------------------------


def test_errors_are_problem_documents_of_the_declared_kinds() -> None:
    assert issubclass(formats.EmptyFile, InvalidInput)
    assert issubclass(formats.UnrecognizedFormat, UnsupportedMediaType)
    slugs = {
        cls.slug: cls.status
        for cls in vars(formats).values()
        if isinstance(cls, type)
        and issubclass(cls, formats.DatasetFileError)
        and cls is not formats.DatasetFileError
    }
    assert slugs == {
        "empty-file": 422,
        "no-rows": 422,
        "no-columns": 422,
        "ragged-rows": 422,
        "unrecognized-format": 415,
        "malformed-csv": 422,
        "malformed-json": 422,
        "malformed-parquet": 422,
        "malformed-xlsx": 422,
        "xlsx-too-large": 422,
        "too-many-rows": 422,
        "too-many-columns": 422,
        "unsupported-column-type": 422,
        "undecodable-text": 422,
    }


def test_empty_file(tmp_path: Path) -> None:
    error = _refused(tmp_path, b"")

    assert (error.slug, error.status) == ("empty-file", 422)


def test_whitespace_only_file_is_empty(tmp_path: Path) -> None:
    assert _refused(tmp_path, "  \n\t\r\n  \n").slug == "empty-file"


def test_random_bytes_are_unrecognized(tmp_path: Path) -> None:
    error = _refused(tmp_path, os.urandom(100_000))

    assert (error.slug, error.status) == ("unrecognized-format", 415)


def test_control_characters_without_nul_are_unrecognized(tmp_path: Path) -> None:
    content = bytes(b for b in os.urandom(20_000) if b not in (0, 0x0A, 0x0D))

    assert _refused(tmp_path, content).slug == "unrecognized-format"


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), ".xls"),
        (gzip.compress(b"a,b\n1,2\n"), "gzip"),
    ],
)
def test_known_unsupported_formats_say_what_to_do(
    tmp_path: Path, content: bytes, hint: str
) -> None:
    error = _refused(tmp_path, content)

    assert error.slug == "unrecognized-format"
    assert hint in error.detail


@pytest.mark.parametrize("content", ["a,b,c\n", "a,b,c", "a,b,c\n\n\n"])
def test_header_without_rows(tmp_path: Path, content: str) -> None:
    error = _refused(tmp_path, content)

    assert (error.slug, error.status) == ("no-rows", 422)
    assert "3 columns" in error.detail


def test_ragged_row_is_located(tmp_path: Path) -> None:
    error = _refused(tmp_path, "a,b,c\n1,2,3\n4,5\n6,7,8\n")

    assert (error.slug, error.status) == ("ragged-rows", 422)
    assert error.extra == {"row": 3, "expected": 3, "found": 2}
    assert "Row 3 has 2 fields where the header has 3 fields" in error.detail


def test_ragged_row_far_into_a_large_file_is_located(tmp_path: Path) -> None:
    body = "".join(f"{i},{i * 2}\n" for i in range(5_000))
    error = _refused(tmp_path, "a,b\n" + body + "1,2,3\n")

    assert error.extra == {"row": 5_002, "expected": 2, "found": 3}


def test_unterminated_quote_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, 'a,b\n1,"open\n2,3\n')

    assert (error.slug, error.status) == ("malformed-csv", 422)
    assert "never closed" in error.detail


def test_lenient_quoting_is_accepted(tmp_path: Path) -> None:
    parsed = _read(tmp_path, 'a,b\n1,"x"y\n2,z\n')  # a stray character after a closing quote

    assert parsed.table.column("a").to_pylist() == [1, 2]
    assert parsed.table.column("b").to_pylist() == ["xy", "z"]


def test_too_many_rows(tmp_path: Path) -> None:
    content = "n\n" + "".join(f"{i}\n" for i in range(11))
    error = _refused(
        tmp_path, content, Limits(max_rows=10, max_columns=5, max_xlsx_uncompressed_bytes=1)
    )

    assert (error.slug, error.status) == ("too-many-rows", 422)
    assert error.extra == {"limit": 10, "rows": 11}


def test_too_many_columns_is_refused_from_the_header(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(51))
    error = _refused(tmp_path, header + "\n" + ",".join("1" * 51) + "\n")

    assert (error.slug, error.status) == ("too-many-columns", 422)
    assert error.extra == {"limit": 50, "columns": 51}


def test_limits_at_the_boundary_are_accepted(tmp_path: Path) -> None:
    content = ",".join(f"c{i}" for i in range(5)) + "\n" + "1,2,3,4,5\n" * 10
    limits = Limits(max_rows=10, max_columns=5, max_xlsx_uncompressed_bytes=1)

    parsed = _read(tmp_path, content, limits)

    assert (parsed.table.num_rows, parsed.table.num_columns) == (10, 5)


def test_library_messages_do_not_reveal_the_server_path(tmp_path: Path) -> None:
    folder = tmp_path / "spool-4f2a"
    folder.mkdir()
    corrupt_parquet = _file(folder, b"PAR1" + bytes(300) + b"PAR1", name="original")
    with pytest.raises(formats.MalformedParquet) as parquet_error:
        read_table(corrupt_parquet, LIMITS)
    corrupt_xlsx = folder / "workbook"
    with zipfile.ZipFile(corrupt_xlsx, "w") as archive:
        archive.writestr("[Content_Types].xml", "junk")
        archive.writestr("xl/workbook.xml", "<w")
    with pytest.raises(formats.MalformedXlsx) as xlsx_error:
        read_table(corrupt_xlsx, LIMITS)

    for error in (parquet_error.value, xlsx_error.value):
        assert "spool-4f2a" not in error.detail
        assert len(error.detail) < 400
