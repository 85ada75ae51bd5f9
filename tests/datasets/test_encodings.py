"""Text encodings decided from the whole file: UTF-8 never read as cp1252, a legacy file still
read, a mix of the two refused at its first undecodable line, any line ending."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from atelier.datasets import encodings, formats
from atelier.datasets.formats import Limits, read_table

pytestmark = pytest.mark.backend_independent

LIMITS = Limits(max_rows=1_000_000, max_columns=50, max_xlsx_uncompressed_bytes=20_000_000)
FILLER_ROWS = "".join(f"row{i},plain\n" for i in range(10_000))  # well past the probe


def _read(tmp_path: Path, content: bytes, name: str = "") -> formats.Parsed:
    path = tmp_path / "upload"
    path.write_bytes(content)
    return read_table(path, LIMITS, name=name)


def _refused(tmp_path: Path, content: bytes) -> formats.DatasetFileError:
    with pytest.raises(formats.DatasetFileError) as caught:
        _read(tmp_path, content)
    return caught.value


def test_utf8_with_a_latin1_line_is_refused_at_that_line(tmp_path: Path) -> None:
    content = "city,n\nMontréal,1\n".encode() + "Québec,2\n".encode("latin-1")

    error = _refused(tmp_path, content)

    assert (error.slug, error.status) == ("undecodable-text", 422)
    assert error.extra == {"line": 3, "expected": "UTF-8"}
    assert "line 3 holds the byte 0xE9, which is not UTF-8" in error.detail
    assert "Save the whole file as UTF-8" in error.detail


def test_a_latin1_line_far_past_the_probe_of_a_utf8_file_is_located(tmp_path: Path) -> None:
    content = ("name,label\nnaïve,1\n" + FILLER_ROWS).encode() + "déjà,2\n".encode("cp1252")
    assert len(content) > formats.PROBE_BYTES

    error = _refused(tmp_path, content)

    assert error.extra["line"] == 10_003


def test_latin1_lines_then_utf8_lines_are_refused_too(tmp_path: Path) -> None:
    content = ("name,label\n" + FILLER_ROWS).encode() + "Nîmes,1\n".encode("latin-1")
    content += "".join(f"Montréal {i},{i}\n" for i in range(5)).encode()

    error = _refused(tmp_path, content)

    assert error.slug == "undecodable-text"
    assert error.extra["line"] == 10_002


@pytest.mark.parametrize(
    ("text", "line"),
    [("a,b\r\nx,1\r\nQuébec,2\r\n", 3), ("a,b\rx,1\rQuébec,2\r", 3), ("a,b\nx,1\r\nQuébec,2", 3)],
)
def test_the_line_counts_every_kind_of_line_end(tmp_path: Path, text: str, line: int) -> None:
    content = "é,ü\n".encode() + text.encode("latin-1")

    assert _refused(tmp_path, content).extra["line"] == line + 1


def test_a_pure_latin1_file_is_read_as_cp1252(tmp_path: Path) -> None:
    parsed = _read(tmp_path, "ville;prix\nMontréal;1\nQuébec;2\nCAFÉ’S;3\n".encode("cp1252"))

    assert parsed.details["encoding"] == "cp1252"
    assert parsed.table.column("ville").to_pylist() == ["Montréal", "Québec", "CAFÉ’S"]


def test_a_byte_cp1252_leaves_undefined_makes_it_latin1(tmp_path: Path) -> None:
    rows = "".join(f"{i};café crème;thé à la menthe;Noël\n" for i in range(50))
    content = ("n;a;b;c\n" + rows + "x;\x81;y;z\n").encode("latin-1")

    parsed = _read(tmp_path, content)

    assert parsed.details["encoding"] == "latin-1"
    assert parsed.table.column("a").to_pylist()[0] == "café crème"


def test_utf8_is_never_read_as_cp1252_even_when_the_probe_is_ascii(tmp_path: Path) -> None:
    parsed = _read(tmp_path, ("name,label\n" + FILLER_ROWS + "last,Montréal\n").encode())

    assert parsed.details["encoding"] == "utf-8"
    assert parsed.table.column("label").to_pylist()[-1] == "Montréal"


def test_a_utf8_character_cut_by_a_read_chunk_is_still_utf8(tmp_path: Path) -> None:
    head = "a\n" + "x" * (encodings.CHUNK_BYTES - len("a\n") - 1) + "\n"
    content = (head[:-1] + "é\n").encode()
    assert content[encodings.CHUNK_BYTES - 1 : encodings.CHUNK_BYTES + 1] == "é".encode()

    assert _read(tmp_path, content).details["encoding"] == "utf-8"


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("имя;город\nИван;Москва\nПётр;Санкт-Петербург\nОльга;Новосибирск\n", "cp1251"),
        ("όνομα;πόλη\nΓιώργος;Αθήνα\nΜαρία;Θεσσαλονίκη\nΝίκος;Πάτρα\n", "cp1253"),
        ("名前;都市\n田中;東京\n山田;大阪\n鈴木;名古屋\n", "cp932"),
    ],
)
def test_legacy_encodings_of_other_scripts_are_detected(
    tmp_path: Path, text: str, codec: str
) -> None:
    parsed = _read(tmp_path, text.encode(codec))

    assert parsed.details["encoding"] == codec
    first_column = parsed.table.column(0).to_pylist()
    assert first_column == [line.split(";")[0] for line in text.splitlines()[1:]]


def test_a_utf8_bom_then_bytes_that_are_not_utf8_is_refused(tmp_path: Path) -> None:
    content = codecs.BOM_UTF8 + b"a,b\nx,1\n" + "é,2\n".encode("latin-1")

    error = _refused(tmp_path, content)

    assert error.slug == "undecodable-text"
    assert error.extra == {"line": 3, "expected": "UTF-8"}
    assert "byte-order mark" in error.detail


def test_utf16_with_a_lone_surrogate_is_refused_at_its_line(tmp_path: Path) -> None:
    content = codecs.BOM_UTF16_LE + "a\tb\nx\t1\n".encode("utf-16-le") + b"\x00\xd8" + b"\t\x00"

    error = _refused(tmp_path, content)

    assert error.slug == "undecodable-text"
    assert error.extra == {"line": 3, "expected": "UTF-16"}


def test_bare_carriage_returns_end_lines(tmp_path: Path) -> None:
    parsed = _read(tmp_path, b"name;score\rAnn;1\rBob;2\r")

    assert parsed.details["delimiter"] == ";"
    assert parsed.table.column_names == ["name", "score"]
    assert parsed.table.column("score").to_pylist() == [1, 2]


def test_bare_carriage_returns_in_a_file_larger_than_the_probe(tmp_path: Path) -> None:
    rows = "".join(f"{i};name {i};{i * 2}\r" for i in range(20_000))
    content = ("id;name;double\r" + rows).encode()
    assert len(content) > formats.PROBE_BYTES

    parsed = _read(tmp_path, content)

    assert (parsed.table.num_rows, parsed.table.num_columns) == (20_000, 3)
    assert parsed.table.column("double").to_pylist()[-1] == 39_998
