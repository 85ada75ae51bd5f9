"""Which encoding an uploaded text file is in, decided from all of its bytes.

- A byte-order mark decides (UTF-8, UTF-16 LE or BE), and the whole file must then decode.
- Else a file that is valid UTF-8 throughout is UTF-8 (plain ASCII included): UTF-8 text is
  never read as cp1252.
- Else the file is in a legacy encoding, unless it mixes UTF-8 with another one (typically
  Latin-1 lines pasted into a UTF-8 file): no single codec reads such a file right, so it is
  refused at the line of its first byte that is not UTF-8. A file mixes when valid UTF-8
  sequences make up `MIXED_SHARE` of its non-ASCII bytes or more (and `MIN_EVIDENCE` bytes at
  least), or, for Western text, when any of them reads in UTF-8 as a Latin letter or
  typographic punctuation (`Ã©` is `é`); the odd pair of legacy characters that happens to be
  valid UTF-8 (`Пё` in cp1251, `É` then a curly apostrophe in cp1252) stays below.
- The legacy encoding is windows-1252 (latin-1 where one of the five bytes cp1252 leaves
  undefined occurs), unless charset-normalizer, shown the file's non-ASCII lines and limited
  to `OTHER_SCRIPTS` and cp1252, finds one of another script that reads them better
  (Cyrillic, Greek, Hebrew, Arabic, Japanese, Chinese, Korean). It is not asked to choose
  among Latin encodings: on short tabular samples it takes cp1252 text for cp1250, cp1257 or
  cp775 (`crčme brűlée`), which would be worse than the rule.

The file is read in `CHUNK_BYTES` pieces: memory stays bounded and the cost is one decoding
pass (two for a legacy file), never a parse.
"""

from __future__ import annotations

import codecs
import pathlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

CHUNK_BYTES = 1024 * 1024
SAMPLE_BYTES = 64 * 1024
MIXED_SHARE = 0.4
MIN_EVIDENCE = 16
OTHER_SCRIPTS = ("cp1251", "cp1253", "cp1255", "cp1256", "cp932", "gb18030", "big5", "cp949")
WESTERN = ("cp1252", "latin-1")

# What UTF-8 in a Western file decodes to: Latin-1 and Latin Extended-A letters and symbols,
# dashes, quotes, bullets, ellipsis, the euro and trade mark signs.
_WESTERN_IN_UTF8 = re.compile("[\u00a0-\u017f\u2010-\u2026\u20ac\u2122]")
# bytes.translate(None, delete) keeps what is not deleted: all but these five bytes go.
_ALL_BUT_CP1252_UNDEFINED = bytes(b for b in range(256) if b not in b"\x81\x8d\x8f\x90\x9d")
_NON_ASCII_LINE = re.compile(rb"[^\r\n]*[\x80-\xff][^\r\n]*")
_ASCII = bytes(range(128))

Decoder = Callable[[bytes, str, bool], tuple[str, int]]
_BOMS: tuple[tuple[bytes, str, str, Decoder], ...] = (
    (codecs.BOM_UTF8, "utf-8", "utf-8", codecs.utf_8_decode),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le", codecs.utf_16_le_decode),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be", codecs.utf_16_be_decode),
)


@dataclass(frozen=True)
class TextEncoding:
    codec: str  # what the whole file is decoded with (by pyarrow or Python)
    name: str  # what is reported
    bom: bool


@dataclass(frozen=True)
class Undecodable:
    """Where the file stops being valid in the encoding it was expected to be in."""

    line: int  # 1-based; \n, \r\n and a bare \r each end a line
    byte: int  # the offending byte's value
    expected: str  # "UTF-8", "UTF-16"
    mixed: bool  # UTF-8 elsewhere in the file (not a BOM that lies)


def detect(path: pathlib.Path) -> TextEncoding | Undecodable:
    """The file's encoding, or where it cannot be decoded (see the module docstring)."""
    with path.open("rb") as source:
        head = source.read(4)
    for bom, codec, name, decode in _BOMS:
        if head.startswith(bom):
            bad = _first_error(path, decode, len(bom))
            if bad is not None:
                return Undecodable(bad[0], bad[1], name[:6].upper(), mixed=False)
            return TextEncoding(codec, name, bom=True)
    bad = _first_error(path, codecs.utf_8_decode, 0)
    if bad is None:
        return TextEncoding("utf-8", "utf-8", bom=False)
    stats = _legacy_stats(path)
    codec = _legacy_codec(stats)
    western = codec in WESTERN and stats.western_in_utf8
    share = stats.utf8_bytes >= max(MIXED_SHARE * stats.non_ascii, MIN_EVIDENCE)
    if share or western:
        return Undecodable(bad[0], bad[1], "UTF-8", mixed=True)
    return TextEncoding(codec, codec, bom=False)


def _chunks(path: pathlib.Path, start: int) -> Iterator[bytes]:
    with path.open("rb") as source:
        source.seek(start)
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def _first_error(path: pathlib.Path, decode: Decoder, start: int) -> tuple[int, int] | None:
    """The line and value of the first byte `decode` refuses, or None if the file decodes."""
    lines = _LineCounter()
    pending = b""
    for chunk in _chunks(path, start):
        data = pending + chunk
        try:
            text, used = decode(data, "strict", False)  # a cut sequence waits for the next chunk
        except UnicodeDecodeError as exc:
            lines.feed(data[: exc.start].decode(exc.encoding))
            return lines.line, data[exc.start]
        lines.feed(text)
        pending = data[used:]
    if pending:  # the file ends inside a sequence
        try:
            decode(pending, "strict", True)
        except UnicodeDecodeError as exc:
            return lines.line, pending[exc.start]
    return None


class _LineCounter:
    """Counts line ends in text fed piece by piece (a \\r\\n split between pieces is one)."""

    def __init__(self) -> None:
        self.line = 1
        self._after_cr = False

    def feed(self, text: str) -> None:
        if not text:
            return
        ends = text.count("\n") + text.count("\r") - text.count("\r\n")
        if self._after_cr and text.startswith("\n"):
            ends -= 1
        self.line += ends
        self._after_cr = text.endswith("\r")


@dataclass
class _Stats:
    non_ascii: int = 0  # bytes
    utf8_bytes: int = 0  # of them, in well-formed UTF-8 sequences
    western_in_utf8: bool = False  # one of those sequences is a Latin letter or punctuation
    cp1252_undefined: bool = False
    sample: bytes = b""  # lines holding non-ASCII bytes, up to SAMPLE_BYTES
    sample_non_ascii: int = 0


def _legacy_stats(path: pathlib.Path) -> _Stats:
    stats = _Stats()
    sample: list[bytes] = []
    sampled = 0
    for chunk in _chunks(path, 0):
        if chunk.isascii():
            continue
        non_ascii = len(chunk.translate(None, _ASCII))
        # Valid UTF-8 decodes, each other byte becomes a lone surrogate, which encoding drops.
        text = chunk.decode("utf-8", "surrogateescape")
        valid = len(text.encode("utf-8", "ignore"))
        stats.non_ascii += non_ascii
        stats.utf8_bytes += valid - (len(chunk) - non_ascii)
        if not stats.western_in_utf8:
            stats.western_in_utf8 = _WESTERN_IN_UTF8.search(text) is not None
        if not stats.cp1252_undefined:
            stats.cp1252_undefined = bool(chunk.translate(None, _ALL_BUT_CP1252_UNDEFINED))
        for line in _NON_ASCII_LINE.finditer(chunk):
            if sampled >= SAMPLE_BYTES:
                break
            sample.append(line.group())
            sampled += len(line.group()) + 1
    stats.sample = b"\n".join(sample)
    stats.sample_non_ascii = len(stats.sample.translate(None, _ASCII))
    return stats


def _legacy_codec(stats: _Stats) -> str:
    """cp1252 (latin-1), unless another script reads the sample better: at least as orderly
    (charset-normalizer's "chaos") and as coherent (its language measure) as the Western
    readings, better in one, on at least `MIN_EVIDENCE` non-ASCII bytes (a single `déjà` reads
    as well in cp1251)."""
    import charset_normalizer

    western = "latin-1" if stats.cp1252_undefined else "cp1252"
    if stats.sample_non_ascii < MIN_EVIDENCE:
        return western
    matches = charset_normalizer.from_bytes(
        stats.sample, cp_isolation=[*OTHER_SCRIPTS, "cp1252", "latin_1"]
    )
    best = matches.best()
    if best is None or best.encoding not in OTHER_SCRIPTS:
        return western
    for match in matches:
        if match.encoding in ("cp1252", "latin_1"):
            score, rival = (-best.chaos, best.coherence), (-match.chaos, match.coherence)
            if min(s - r for s, r in zip(score, rival, strict=True)) < 0 or score == rival:
                return western
    return best.encoding
