"""Translations for the web UI: gettext catalogs (`locale/<lang>/LC_MESSAGES/messages.po`) read
with Babel and compiled in memory at start, and the choice of language for a request.

Order of choice: the visitor's explicit choice (cookie), then `ATELIER_DEFAULT_LANGUAGE`, then the
browser's `Accept-Language`, then English.
"""

import gettext
from io import BytesIO
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES = {"en": "English", "fr": "Français"}
FALLBACK = "en"
COOKIE = "atelier_lang"
LOCALE_DIR = Path(__file__).parent / "locale"


def N_(message: str) -> str:
    """Mark a message for extraction; translate it later with `Renderer.gettext`."""
    return message


def load_translations(directory: Path = LOCALE_DIR) -> dict[str, gettext.NullTranslations]:
    """One translations object per language; English is the source language."""
    result: dict[str, gettext.NullTranslations] = {FALLBACK: gettext.NullTranslations()}
    for lang in LANGUAGES:
        po = directory / lang / "LC_MESSAGES" / "messages.po"
        if lang == FALLBACK or not po.exists():
            continue
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=lang)
        buffer = BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        result[lang] = gettext.GNUTranslations(buffer)
    return result


def parse_accept_language(header: str) -> list[str]:
    """Primary language tags from an Accept-Language header, best first (`fr-CA;q=0.8` -> `fr`).

    RFC 9110: parameters after `;` with optional whitespace, `q` in any case, a weight from 0
    to 1 (anything else counts as 0, "not acceptable").
    """
    ranked = []
    for position, part in enumerate(header.split(",")):
        tag, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
                if not 0 <= quality <= 1:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, position, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(*, cookie: str | None, default: str | None, accept_language: str) -> str:
    if cookie in LANGUAGES:
        return cookie
    if default in LANGUAGES:
        return default
    for tag in parse_accept_language(accept_language):
        if tag in LANGUAGES:
            return tag
    return FALLBACK


def safe_next(path: str | None) -> str:
    """A same-origin relative path to go back to, or `/` (no open redirect)."""
    if (
        not path
        or not path.startswith("/")
        or path.startswith("//")
        or "\\" in path
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)  # browsers drop tabs, newlines
    ):
        return "/"
    return path
