"""Reading an uploaded data file into an Arrow table, whatever its format.

The format is recognised from the content (an upload has no trustworthy name; its one use is
below):

- Parquet: `PAR1` at the start and at the end;
- XLSX: a ZIP archive holding `[Content_Types].xml` and `xl/workbook.xml` (any other ZIP is
  refused); only the first sheet is read, and its name is reported;
- JSON: an array of records (`[{...}, ...]`) or JSON Lines (one object per line); JSON must be
  UTF-8;
- anything else that looks like text: delimited text (`,` `;` tab `|`, any line ending), in the
  encoding `encodings.detect` finds from the whole file (UTF-8, UTF-16 with a byte-order mark,
  cp1252, latin-1 or a legacy encoding of another script); a file mixing UTF-8 with another
  encoding is refused at its first undecodable line.

The one use of the file's name: a file named `.json`, `.jsonl` or `.ndjson` whose text is not
JSON is refused as malformed JSON, never read as delimited text (a binary format is still
recognised by its magic number). JSON with comments is refused whatever its name.

JSON is parsed within the bounds of `json_bounds`: values nest at most 32 levels, integers
have at most 38 digits (those past 64 bits are kept as text, nested ones too), and the NUL
character is refused. Library failures, polars' panics included (a `BaseException`), are
caught where polars is called.

Parsing is done by pyarrow (CSV, Parquet) and polars (JSON, XLSX through calamine), never row
by row in Python: a probe of the first `PROBE_BYTES` is read into Python to decide how, and text
is streamed through a decoder (`encodings`) and JSON through a NUL scan (`json_bounds`) in 1 MiB
pieces.

The table that comes out is tidy: unique column names (empty ones become `column_<n>`, repeats
get `_2`, `_3`..., control characters go, at most `MAX_NAME_CHARS` characters; renames are in
`details["renamed"]`), plain types (dictionary, large and view strings become `string`), and
nested values (lists, structs, maps from JSON or Parquet) turned into JSON strings, listed in
`details["json_encoded"]`. In delimited text, empty fields and the usual markers (`NA`, `NULL`,
`NaN`, `N/A`, ...) are missing values, in text columns too.

Every problem with the file itself raises a `DatasetFileError` (a 422, or a 415 for a format
that is not supported), never a bare library exception.
"""

from __future__ import annotations

import codecs
import collections
import csv
import io
import pathlib
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, NoReturn

import fastexcel
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from atelier.core.errors import AtelierError, InvalidInput, UnsupportedMediaType
from atelier.datasets import encodings, json_bounds

PROBE_BYTES = 64 * 1024
MAX_NAME_CHARS = 200
# An .xlsx has a dozen entries; tens of thousands are a denial-of-service attempt.
MAX_XLSX_ENTRIES = 10_000
# Entries smaller than this are not held to the compression-ratio rule: a small, repetitive XML
# part can compress 200:1 and still expand to nothing worth guarding against; their size still
# counts towards the total.
XLSX_RATIO_MIN_BYTES = 1024 * 1024
# Large enough that a row with long quoted fields never straddles two blocks.
_CSV_BLOCK_BYTES = 16 * 1024 * 1024
_DELIMITERS = (",", ";", "\t", "|")
_QUOTES = ('"', "'")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_GZIP_MAGIC = b"\x1f\x8b"
# C0 controls except tab, newlines, vertical tab and form feed; DEL; C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Stripped from column names: all C0/C1 controls, line and paragraph separators, bidi controls
# and the byte-order mark (zero-width joiners stay: scripts and emoji need them).
_NAME_JUNK = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)
_WHITESPACE_ONLY = re.compile(r"\s*")
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
_LEADING_COMMENTS = re.compile(r"(?:\s*(?://[^\r\n]*|/\*.*?\*/))+\s*", re.DOTALL)
# What polars raises, including its Rust panics: PanicException is a BaseException.
_POLARS_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException)
_ENCRYPTED = 0x1  # zip general-purpose flag bit 0


@dataclass(frozen=True)
class Parsed:
    table: pa.Table
    format: str  # "csv" | "tsv" | "json" | "jsonl" | "parquet" | "xlsx"
    details: dict[str, Any]  # JSON-able facts about the parse: see read_table


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_columns: int
    max_xlsx_uncompressed_bytes: int  # zip-bomb guard: total uncompressed size of the entries
    max_xlsx_ratio: float = 100.0  # an entry compressing better than this is refused


# ---- errors -----------------------------------------------------------------------------------


class DatasetFileError(AtelierError):
    """The uploaded file cannot become a table; `detail` says what to fix."""

    slug: ClassVar[str] = "dataset-file-error"


class EmptyFile(DatasetFileError, InvalidInput):
    status, slug, title = 422, "empty-file", "Empty file"


class NoRows(DatasetFileError, InvalidInput):
    status, slug, title = 422, "no-rows", "No data rows"


class NoColumns(DatasetFileError, InvalidInput):
    status, slug, title = 422, "no-columns", "No columns"


class RaggedRows(DatasetFileError, InvalidInput):
    status, slug, title = 422, "ragged-rows", "Rows of different lengths"


class UnrecognizedFormat(DatasetFileError, UnsupportedMediaType):
    status, slug, title = 415, "unrecognized-format", "Unrecognized file format"


class MalformedCsv(DatasetFileError, InvalidInput):
    status, slug, title = 422, "malformed-csv", "Malformed delimited text"


class MalformedJson(DatasetFileError, InvalidInput):
    status, slug, title = 422, "malformed-json", "Malformed JSON"


class MalformedParquet(DatasetFileError, InvalidInput):
    status, slug, title = 422, "malformed-parquet", "Malformed Parquet file"


class MalformedXlsx(DatasetFileError, InvalidInput):
    status, slug, title = 422, "malformed-xlsx", "Malformed Excel workbook"


class XlsxTooLarge(DatasetFileError, InvalidInput):
    status, slug, title = 422, "xlsx-too-large", "Excel workbook expands too much"


class TooManyRows(DatasetFileError, InvalidInput):
    status, slug, title = 422, "too-many-rows", "Too many rows"


class TooManyColumns(DatasetFileError, InvalidInput):
    status, slug, title = 422, "too-many-columns", "Too many columns"


class UnsupportedColumnType(DatasetFileError, InvalidInput):
    status, slug, title = 422, "unsupported-column-type", "Unsupported column type"


class UndecodableText(DatasetFileError, InvalidInput):
    status, slug, title = 422, "undecodable-text", "Text in more than one encoding"


# ---- entry point ------------------------------------------------------------------------------


def read_table(path: pathlib.Path, limits: Limits, *, name: str = "") -> Parsed:
    """Detect the format of the file at `path` from its content and parse it whole; `name`,
    the file's name as uploaded, only makes a `.json` that is not JSON an error.

    `details` always has `renamed` ({new: original} column names) and `json_encoded` (columns
    whose nested values became JSON text), and by format: `delimiter`, `quote`, `encoding`,
    `bom` (csv, tsv); `encoding`, `bom` (json, jsonl); `row_groups` (parquet); `sheet` (the
    first sheet's name, the one read) and `sheets` (how many there are) (xlsx).

    Raises a `DatasetFileError` subclass for anything wrong with the file, including the
    limits, checked before the full parse where the format allows it (CSV header, Parquet
    metadata, XLSX zip directory and header row).
    """
    size = path.stat().st_size
    if size == 0:
        raise EmptyFile("The file is empty (0 bytes).")
    with path.open("rb") as source:
        head = source.read(PROBE_BYTES)
        source.seek(max(size - 4, 0))
        tail = source.read(4)
    whole = size <= PROBE_BYTES

    if head.startswith(b"PAR1"):
        if size < 12 or tail != b"PAR1":
            raise MalformedParquet(
                "The file starts like Parquet but does not end with the Parquet footer: "
                "it is probably truncated; upload it again."
            )
        return _read_parquet(path, limits)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _read_xlsx(path, limits)
    if head.startswith(_OLE_MAGIC):
        raise UnrecognizedFormat(
            "This is a legacy Excel (.xls) or password-protected workbook; save it as .xlsx "
            "without a password, or as CSV."
        )
    if head.startswith(_GZIP_MAGIC):
        raise UnrecognizedFormat("This is a compressed (gzip) file; upload it uncompressed.")

    probe = _text_probe(path, head, whole=whole)
    if whole and _WHITESPACE_ONLY.fullmatch(probe.text):
        raise EmptyFile("The file holds only whitespace.")
    start = probe.text.lstrip()
    # `[id],[name]` (as SQL Server writes headers) is text; `[{`, `[]`, `[1` are JSON.
    if start.startswith("[") and not _is_word_start(start[1:].lstrip()[:1]):
        return _read_json_array(path, probe, limits)
    if start.startswith("{") and start[1:].lstrip()[:1] in ('"', "}", ""):
        return _read_json_lines(path, probe, limits)
    _refuse_json_lookalike(start, name)
    return _read_delimited(path, probe, limits, whole=whole)


def _refuse_json_lookalike(start: str, name: str) -> None:
    """JSON with comments, or text named as JSON, is broken JSON, not a one-column table."""
    comments = _LEADING_COMMENTS.match(start)
    if comments and start[comments.end() :][:1] in ("[", "{"):
        raise MalformedJson(
            "The file is JSON with comments (// or /* */), which JSON does not allow; remove "
            "the comments."
        )
    if pathlib.PurePath(name).suffix.lower() in _JSON_SUFFIXES:
        raise MalformedJson(
            f"The file is named {name!r} but is not JSON: it starts with {start[:40]!r}. "
            "Upload an array of records or JSON Lines, or name a delimited text file .csv."
        )


def _is_word_start(char: str) -> bool:
    return char.isalpha() or char == "_"


# ---- text: encoding and delimiters -----------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    text: str  # the decoded probe, without its byte-order mark
    codec: str  # what the whole file is decoded with
    encoding: str  # what is reported
    bom: bool


def _text_probe(path: pathlib.Path, head: bytes, *, whole: bool) -> _Probe:
    """The probe decoded with the encoding of the whole file (`encodings.detect`: the probe
    alone can mislead, with UTF-8 lines after it or a UTF-8 probe of a cp1252 file); binary
    content refused first, by `_decode_probe`, or for a legacy encoding of another script
    (whose bytes look like latin-1 control characters) from the text in that encoding."""
    try:
        probe = _decode_probe(head, whole=whole)
        binary = None
    except UnrecognizedFormat as exc:
        if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise
        probe, binary = None, exc
    found = encodings.detect(path)
    if isinstance(found, encodings.Undecodable):
        raise binary or _undecodable(found)
    if probe is not None and found.codec == probe.codec:
        return _Probe(probe.text, found.codec, found.name, found.bom)
    if binary is not None and found.codec not in encodings.OTHER_SCRIPTS:
        raise binary
    decoder = codecs.getincrementaldecoder(found.codec)(errors="replace")
    text = decoder.decode(head, final=whole)
    _refuse_binary(text)
    return _Probe(text, found.codec, found.name, found.bom)


def _decode_probe(head: bytes, *, whole: bool) -> _Probe:
    """Pick the encoding from the probe: a BOM, else UTF-8, cp1252, latin-1 (which never fails).

    Refuses binary content: NUL bytes outside UTF-16, or more than 10 % control characters
    (random bytes decoded as latin-1 have about 23 %)."""
    boms = (
        (codecs.BOM_UTF8, "utf-8", "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
    )
    for bom, codec, encoding in boms:
        if head.startswith(bom):
            decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
            probe = _Probe(decoder.decode(head[len(bom) :], final=whole), codec, encoding, True)
            break
    else:
        if b"\x00" in head:
            raise _binary()
        probe = _Probe("", "latin-1", "latin-1", False)
        for encoding in ("utf-8", "cp1252"):
            try:
                # A multibyte character cut at the end of the probe waits in the decoder.
                text = codecs.getincrementaldecoder(encoding)().decode(head, final=whole)
            except UnicodeDecodeError:
                continue
            probe = _Probe(text, encoding, encoding, False)
            break
        else:
            probe = _Probe(head.decode("latin-1"), "latin-1", "latin-1", False)
    _refuse_binary(probe.text)
    return probe


def _refuse_binary(text: str) -> None:
    controls = len(_CONTROL.findall(text)) + text.count("\ufffd")
    if "\x00" in text or controls * 10 > len(text):
        raise _binary()


def _undecodable(found: encodings.Undecodable) -> UndecodableText:
    where = f"line {found.line} holds the byte 0x{found.byte:02X}, which is not {found.expected}"
    if found.mixed:
        detail = (
            f"The file mixes encodings: it holds UTF-8 text, but {where} (probably a Latin-1 "
            "or Windows-1252 character). Save the whole file as UTF-8."
        )
    else:
        detail = (
            f"The file starts with a {found.expected} byte-order mark, but {where}. Save the "
            f"file again as {found.expected}."
        )
    return UndecodableText(detail, line=found.line, expected=found.expected)


def _binary() -> UnrecognizedFormat:
    return UnrecognizedFormat(
        "The file is not text, and not a Parquet, Excel (.xlsx) or JSON file: upload CSV, TSV, "
        "JSON, JSON Lines, Parquet or .xlsx."
    )


def _sniff(sample: str) -> tuple[str, str]:
    """The delimiter and quote character that split the sample's rows most consistently.

    For each candidate, rows are split with the csv module and the share of rows having the
    most common field count is the score (a tie goes to more fields, then to `"` over `'` and
    to the order of `_DELIMITERS`). csv.Sniffer's guesses are brittle on short or quoted
    samples, hence this simpler rule."""
    best: tuple[tuple[float, int, int, int], str, str] | None = None
    for q_rank, quote in enumerate(_QUOTES):
        for d_rank, delimiter in enumerate(_DELIMITERS):
            try:
                widths = [
                    len(row)
                    for row in csv.reader(_lines(sample), delimiter=delimiter, quotechar=quote)
                    if row
                ]
            except csv.Error:
                continue
            if not widths:
                continue
            width, count = collections.Counter(widths).most_common(1)[0]
            if width < 2:
                continue
            key = (count / len(widths), width, -q_rank, -d_rank)
            if best is None or key > best[0]:
                best = (key, delimiter, quote)
    if best is None:
        return ",", '"'  # one column: no delimiter appears consistently
    return best[1], best[2]


def _lines(text: str) -> io.StringIO:
    """Text for the csv module: lines end at \n, \r\n or a bare \r (old Mac files)."""
    return io.StringIO(text, newline="")


def _read_delimited(path: pathlib.Path, probe: _Probe, limits: Limits, *, whole: bool) -> Parsed:
    last_end = max(probe.text.rfind("\n"), probe.text.rfind("\r"))
    sample = probe.text if whole else probe.text[: last_end + 1] or probe.text
    delimiter, quote = _sniff(sample)
    rows = _sample_rows(sample, delimiter, quote)
    if whole:
        _check_quotes_closed(sample, delimiter, quote)
    header = rows[0] if rows else []
    _check_columns(len(header), limits)
    if whole and len(rows) <= 1:
        # pyarrow cannot tell a lone header without a final newline from an empty file.
        raise NoRows(f"The file has a header ({_columns(len(header))}) but no data rows.")

    table = _parse_csv(path, probe.codec, delimiter, quote)
    details = {"delimiter": delimiter, "quote": quote, "encoding": probe.encoding, "bom": probe.bom}
    return _finish(table, "tsv" if delimiter == "\t" else "csv", details, limits)


def _sample_rows(sample: str, delimiter: str, quote: str) -> list[list[str]]:
    try:
        reader = csv.reader(_lines(sample), delimiter=delimiter, quotechar=quote)
        return [row for row in reader if row]
    except csv.Error:
        return []


def _check_quotes_closed(text: str, delimiter: str, quote: str) -> None:
    """Refuse a quote left open at the end of the file, which pyarrow silently accepts (the
    rest of the file becomes one field); only a file that fits in the probe is checked."""
    try:
        for _ in csv.reader(_lines(text), delimiter=delimiter, quotechar=quote, strict=True):
            pass
    except csv.Error as exc:
        if "end of data" in str(exc):  # CPython's words for EOF inside quotes
            raise MalformedCsv(
                f"A quoted field is opened with {quote} and never closed before the end of "
                "the file."
            ) from None


def _parse_csv(path: pathlib.Path, codec: str, delimiter: str, quote: str) -> pa.Table:
    """The table; `codec` was checked against the whole file (`encodings.detect`)."""
    try:
        return _parse_csv_with(path, codec, delimiter, quote, threads=True)
    except UnicodeDecodeError as exc:
        raise MalformedCsv(f"The file is not valid {codec} text: {exc.reason}.") from None


def _parse_csv_with(
    path: pathlib.Path, codec: str, delimiter: str, quote: str, *, threads: bool
) -> pa.Table:
    bad_rows: list[pa_csv.InvalidRow] = []

    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    read_options = pa_csv.ReadOptions(
        use_threads=threads, block_size=_CSV_BLOCK_BYTES, encoding=codec
    )
    parse_options = pa_csv.ParseOptions(
        delimiter=delimiter,
        quote_char=quote,
        double_quote=True,
        newlines_in_values=True,
        invalid_row_handler=on_invalid_row,
    )
    convert_options = pa_csv.ConvertOptions(strings_can_be_null=True)
    try:
        return pa_csv.read_csv(
            path,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
    except pa.ArrowInvalid as exc:
        if not bad_rows:
            raise MalformedCsv(
                f"The file cannot be read as delimited text: {_reason(exc, path)}."
            ) from None
        row = bad_rows[0]
        if row.number is None and threads:
            # Row numbers are only known to the single-threaded reader: read again to find it.
            return _parse_csv_with(path, codec, delimiter, quote, threads=False)
        where = f"Row {row.number}" if row.number is not None else "A row"
        extra = {"row": row.number} if row.number is not None else {}
        raise RaggedRows(
            f"{where} has {_fields(row.actual_columns)} where the header has "
            f"{_fields(row.expected_columns)} (rows are counted from the header, as row 1): "
            f"{row.text[:100]!r}. Quote fields that contain the delimiter.",
            expected=row.expected_columns,
            found=row.actual_columns,
            **extra,
        ) from None
    except pa.ArrowException as exc:
        raise MalformedCsv(
            f"The file cannot be read as delimited text: {_reason(exc, path)}."
        ) from None


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"


def _columns(count: int) -> str:
    return f"{count} column" if count == 1 else f"{count} columns"


# ---- JSON -------------------------------------------------------------------------------------


def _require_utf8(probe: _Probe) -> None:
    if probe.encoding != "utf-8":
        raise MalformedJson(
            f"JSON must be UTF-8 encoded; this file looks like {probe.encoding}. Save it as UTF-8."
        )


def _read_json_array(path: pathlib.Path, probe: _Probe, limits: Limits) -> Parsed:
    _require_utf8(probe)
    _refuse_bad_values(path)
    try:
        frame = pl.read_json(path, infer_schema_length=None)
    except _POLARS_ERRORS as exc:
        if "json objects" in str(exc):
            raise MalformedJson(
                "The JSON array does not hold records: expected objects such as "
                '[{"column": value, ...}, ...].'
            ) from None
        raise MalformedJson(_json_problem(exc, path)) from None
    table = _json_frame_to_arrow(frame)
    return _finish(table, "json", {"encoding": "utf-8", "bom": probe.bom}, limits)


def _read_json_lines(path: pathlib.Path, probe: _Probe, limits: Limits) -> Parsed:
    _require_utf8(probe)
    _refuse_bad_values(path)
    first_line, newline, _ = probe.text.lstrip().partition("\n")
    problem = json_bounds.line_problem(first_line) if newline else None
    if problem is not None:
        if problem.startswith(json_bounds.INVALID):  # perhaps one pretty-printed object
            _refuse_single_object(path)
        _raise_bad_line(path, probe, "the first line is not a JSON object")
    try:
        with _open_after_bom(path, probe) as source:
            frame = pl.read_ndjson(source, infer_schema_length=None)
    except _POLARS_ERRORS as exc:
        _raise_bad_line(path, probe, _reason(exc, path))
    details = {"encoding": "utf-8", "bom": probe.bom}
    return _finish(_json_frame_to_arrow(frame), "jsonl", details, limits)


def _refuse_bad_values(path: pathlib.Path) -> None:
    found = json_bounds.first_problem(path)
    if found is not None:
        line, what = found
        raise MalformedJson(f"Line {line} holds {what}.", line=line)


def _json_problem(exc: BaseException, path: pathlib.Path) -> str:
    reason = _reason(exc, path)
    if "DepthLimitExceeded" in reason:  # polars' own limit, 1024 levels
        return (
            "The file nests values too deeply: at most "
            f"{json_bounds.MAX_DEPTH} levels are accepted."
        )
    if "InvalidNumber" in reason:
        return (
            f"The file is not valid JSON: {reason}: a malformed number, or an integer of more "
            f"than {json_bounds.MAX_DIGITS} digits (write long identifiers as strings, in quotes)."
        )
    return f"The file is not valid JSON: {reason}."


def _json_frame_to_arrow(frame: pl.DataFrame) -> pa.Table:
    """The parsed JSON as Arrow, once its nesting is known to be within bounds."""
    for name, dtype in frame.schema.items():
        levels = json_bounds.dtype_depth(dtype)
        if levels > json_bounds.MAX_DEPTH:
            raise MalformedJson(
                f"Column {name!r} holds values nested {levels} levels deep; at most "
                f"{json_bounds.MAX_DEPTH} are accepted.",
                column=name,
            )
    return _polars_to_arrow(frame)


def _refuse_single_object(path: pathlib.Path) -> None:
    """Raise if the whole file is one JSON object (pretty-printed, so not JSON Lines)."""
    try:
        pl.read_json(path)
    except _POLARS_ERRORS:
        return
    raise MalformedJson(
        "The file holds a JSON object; expected an array of records or JSON Lines "
        "(one object per line)."
    )


def _raise_bad_line(path: pathlib.Path, probe: _Probe, fallback: str) -> NoReturn:
    number, problem = _first_bad_line(path, probe)
    if number is None:
        raise MalformedJson(f"The file cannot be read as JSON Lines: {fallback}.") from None
    raise MalformedJson(
        f"Line {number} is not a JSON object that can be read ({problem}); JSON Lines needs "
        "one object per line.",
        line=number,
    ) from None


@contextmanager
def _open_after_bom(path: pathlib.Path, probe: _Probe) -> Iterator[pathlib.Path | BinaryIO]:
    """The path itself, or (when a BOM polars would choke on leads) a file positioned past it."""
    if not probe.bom:
        yield path
        return
    with path.open("rb") as source:
        source.seek(len(codecs.BOM_UTF8))
        yield source


def _first_bad_line(path: pathlib.Path, probe: _Probe) -> tuple[int | None, str]:
    """The number of the first line that is not a JSON object, and why (error path only)."""
    with path.open(encoding="utf-8-sig" if probe.bom else "utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            problem = json_bounds.line_problem(line)
            if problem is not None:
                return number, problem
    return None, ""


def _reason(exc: BaseException, path: pathlib.Path) -> str:
    """A library's message, for the user: its first line, without our file's path (a server
    detail), and bounded."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else type(exc).__name__
    for secret in (str(path), str(path.parent)):
        message = message.replace(secret, "the file")
    return message.rstrip(".")[:300]


# ---- Parquet ----------------------------------------------------------------------------------


def _read_parquet(path: pathlib.Path, limits: Limits) -> Parsed:
    try:
        parquet = pq.ParquetFile(path)
        columns = len(parquet.schema_arrow)
        rows = parquet.metadata.num_rows
        _check_columns(columns, limits)
        _check_rows(rows, limits)
        table = parquet.read()
    except (pa.ArrowException, OSError) as exc:
        raise MalformedParquet(f"The Parquet file cannot be read: {_reason(exc, path)}.") from None
    return _finish(table, "parquet", {"row_groups": parquet.metadata.num_row_groups}, limits)


# ---- XLSX -------------------------------------------------------------------------------------


def _read_xlsx(path: pathlib.Path, limits: Limits) -> Parsed:
    _check_zip(path, limits)
    try:
        sheets = fastexcel.read_excel(path).sheet_names
        if not sheets:
            raise EmptyFile("The workbook has no sheets.")
        sheet = sheets[0]
        # The header row on its own, as written (polars renames duplicates its own way).
        header = pl.read_excel(
            path,
            sheet_name=sheet,
            engine="calamine",
            has_header=False,
            read_options={"n_rows": 1},
            drop_empty_cols=False,
            raise_if_empty=False,
        )
        if header.width == 0:
            raise EmptyFile(f"The first sheet, {sheet!r}, is empty.")
        _check_columns(header.width, limits)
        frame = pl.read_excel(
            path,
            sheet_name=sheet,
            engine="calamine",
            infer_schema_length=None,  # the default (100 rows) silently nulls later odd cells
            drop_empty_cols=False,
            raise_if_empty=False,
        )
    except (fastexcel.FastExcelError, *_POLARS_ERRORS, OSError) as exc:
        raise MalformedXlsx(f"The workbook cannot be read: {_reason(exc, path)}.") from None
    names = [_cell_text(value) for value in header.row(0)]
    table = _polars_to_arrow(frame)
    if len(names) == table.num_columns:
        table = table.rename_columns(names)
    details = {"sheet": sheet, "sheets": len(sheets)}
    return _finish(table, "xlsx", details, limits)


def _check_zip(path: pathlib.Path, limits: Limits) -> None:
    """Refuse what is not an .xlsx, and zip bombs, from the central directory alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UnrecognizedFormat(
            f"The file is a damaged ZIP archive ({_reason(exc, path)})."
        ) from None
    names = {entry.filename for entry in entries}
    if not {"[Content_Types].xml", "xl/workbook.xml"} <= names:
        raise UnrecognizedFormat(
            "The file is a ZIP archive but not an Excel workbook (.xlsx); upload the data file "
            "itself, not an archive."
        )
    if len(entries) > MAX_XLSX_ENTRIES:
        raise XlsxTooLarge(
            f"The workbook has {len(entries)} parts; at most {MAX_XLSX_ENTRIES} are accepted.",
            limit=MAX_XLSX_ENTRIES,
            entries=len(entries),
        )
    if any(entry.flag_bits & _ENCRYPTED for entry in entries):
        raise UnrecognizedFormat("The workbook is encrypted; save it without a password.")
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_xlsx_uncompressed_bytes:
        raise XlsxTooLarge(
            f"The workbook expands to {total} bytes; at most "
            f"{limits.max_xlsx_uncompressed_bytes} are accepted. Save it as CSV or Parquet.",
            limit=limits.max_xlsx_uncompressed_bytes,
            uncompressed_bytes=total,
        )
    for entry in entries:
        if entry.file_size < XLSX_RATIO_MIN_BYTES:
            continue
        ratio = entry.file_size / entry.compress_size if entry.compress_size else float("inf")
        if ratio > limits.max_xlsx_ratio:
            raise XlsxTooLarge(
                f"The workbook part {entry.filename!r} compresses {ratio:.0f} times, more than "
                f"the {limits.max_xlsx_ratio:.0f} accepted: it looks like a zip bomb.",
                limit=limits.max_xlsx_ratio,
                entry=entry.filename,
                ratio=round(ratio, 1) if ratio != float("inf") else None,
            )


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


# ---- the common end ---------------------------------------------------------------------------


def _finish(table: pa.Table, fmt: str, details: dict[str, Any], limits: Limits) -> Parsed:
    if table.num_columns == 0:
        raise NoColumns("The file has no columns.")
    _check_columns(table.num_columns, limits)
    _check_rows(table.num_rows, limits)
    names, renamed = clean_column_names(table.column_names)
    table = table.rename_columns(names)
    table, encoded = _plain_types(table)
    if table.num_rows == 0:
        raise NoRows(f"The file has a header ({_columns(table.num_columns)}) but no data rows.")
    return Parsed(table, fmt, {**details, "renamed": renamed, "json_encoded": encoded})


def _check_columns(columns: int, limits: Limits) -> None:
    if columns > limits.max_columns:
        raise TooManyColumns(
            f"The file has {columns} columns; at most {limits.max_columns} are accepted.",
            limit=limits.max_columns,
            columns=columns,
        )


def _check_rows(rows: int, limits: Limits) -> None:
    if rows > limits.max_rows:
        raise TooManyRows(
            f"The file has {rows} rows; at most {limits.max_rows} are accepted.",
            limit=limits.max_rows,
            rows=rows,
        )


def clean_column_names(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Unique, printable names of at most MAX_NAME_CHARS, and the renames as {new: original}
    (keyed by the new name, which is unique: two empty or repeated originals both show).

    A repeated name gets the first free `_2`, `_3`... suffix, skipping names that other
    columns carry themselves."""
    bases = [
        _NAME_JUNK.sub("", original).strip()[:MAX_NAME_CHARS] or f"column_{position}"
        for position, original in enumerate(names, 1)
    ]
    taken = set(bases)
    used: set[str] = set()
    result: list[str] = []
    renamed: dict[str, str] = {}
    for original, base in zip(names, bases, strict=True):
        name, suffix = base, 1
        while name in used or (name != base and name in taken):
            suffix += 1
            tail = f"_{suffix}"
            name = base[: MAX_NAME_CHARS - len(tail)] + tail
        used.add(name)
        result.append(name)
        if name != original:
            renamed[name] = original
    return result, renamed


def _polars_to_arrow(frame: pl.DataFrame) -> pa.Table:
    # Integers past 64 bits (big IDs in JSON), nested ones too: Arrow has no such type, keep
    # the digits as text.
    wide = {
        name: json_bounds.without_wide_ints(dtype)
        for name, dtype in frame.schema.items()
        if json_bounds.has_wide_ints(dtype)
    }
    try:
        return frame.cast(wide).to_arrow() if wide else frame.to_arrow()
    except (*_POLARS_ERRORS, pa.ArrowException) as exc:
        raise UnsupportedColumnType(
            f"The table's columns cannot be converted: {str(exc).splitlines()[0][:200]}."
        ) from None


def _plain_types(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """Dictionaries decoded, one string type, nested values as JSON text, binary as UTF-8."""
    encoded: list[str] = []
    for index, column in enumerate(table.columns):
        name = table.column_names[index]
        plain = _plain_column(name, column, encoded)
        if plain is not column:
            table = table.set_column(index, name, plain)
    return table, encoded


def _plain_column(name: str, column: pa.ChunkedArray, encoded: list[str]) -> pa.ChunkedArray:
    kind = column.type
    if isinstance(kind, pa.ExtensionType):
        storage = pa.chunked_array([chunk.storage for chunk in column.chunks], kind.storage_type)
        return _plain_column(name, storage, encoded)
    if pa.types.is_dictionary(kind):
        return _plain_column(name, column.cast(kind.value_type), encoded)
    if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return column.cast(pa.string())
    if pa.types.is_float16(kind):
        return column.cast(pa.float32())
    if pa.types.is_decimal(kind) and not pa.types.is_decimal128(kind):
        # polars reads 128-bit decimals only.
        if kind.precision <= 38:
            return column.cast(pa.decimal128(kind.precision, kind.scale))
        return column.cast(pa.float64())
    if pa.types.is_interval(kind) or pa.types.is_run_end_encoded(kind):
        raise UnsupportedColumnType(
            f"Column {name!r} has type {kind}, which is not supported; use numbers or dates.",
            column=name,
        )
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        try:
            return column.cast(pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            raise UnsupportedColumnType(
                f"Column {name!r} holds binary data, not text; only text, numbers, booleans "
                "and dates are accepted.",
                column=name,
            ) from None
    if pa.types.is_nested(kind):
        encoded.append(name)
        return _json_encoded(name, column)
    return column


def _json_encoded(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        series = pl.from_arrow(column)
        assert isinstance(series, pl.Series)
        if series.dtype == pl.Struct:
            text = series.struct.json_encode()
        else:  # a list or map: encode it as the only field of a struct, then unwrap
            text = (
                pl.select(pl.struct(series.alias("v")).struct.json_encode())
                .to_series()
                .str.slice(len('{"v":'))
                .str.head(-1)
            )
        text = pl.select(pl.when(series.is_not_null()).then(text)).to_series()
    except (*_POLARS_ERRORS, pa.ArrowException, TypeError, ValueError):
        raise UnsupportedColumnType(
            f"Column {name!r} holds nested values of a type that cannot be turned into JSON "
            f"text ({column.type}).",
            column=name,
        ) from None
    return pa.chunked_array([text.to_arrow().cast(pa.string())], pa.string())
