"""Language choice and the French catalog of the web UI."""

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from atelier.web import i18n

REPO = Path(__file__).parents[2]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr-FR,fr;q=0.9,en;q=0.8", ["fr", "fr", "en"]),
        ("en;q=0.2, fr-CA;q=0.8", ["fr", "en"]),
        ("de, *;q=0.1", ["de", "*"]),
        ("fr;q=0, en", ["en"]),
        ("fr;q=abc, en", ["en"]),
        ("", []),
        (";;;,,,", []),
    ],
)
def test_accept_language_is_ranked_by_quality(header, expected):
    assert i18n.parse_accept_language(header) == expected


# RFC 9110 allows spaces before ";" and spells "q" in any case; a weight is 0 to 1.
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr ;q=0.5", ["fr"]),
        ("fr;Q=0.1, en;q=0.9", ["en", "fr"]),
        ("en;q=0.5, fr;q=inf", ["en"]),
    ],
)
def test_accept_language_follows_the_rfc_grammar(header, expected):
    assert i18n.parse_accept_language(header) == expected


def test_the_visitors_choice_wins_then_the_instance_default_then_the_browser():
    choose = i18n.choose_language
    assert choose(cookie="fr", default="en", accept_language="en") == "fr"
    assert choose(cookie=None, default="fr", accept_language="en-US") == "fr"
    assert choose(cookie=None, default=None, accept_language="de, fr;q=0.5") == "fr"
    assert choose(cookie="xx", default=None, accept_language="") == "en"
    assert choose(cookie=None, default=None, accept_language="de, es") == "en"


@pytest.mark.parametrize(
    "target", [None, "", "//evil.example", "https://evil.example/", "/\\evil.example", "evil"]
)
def test_next_never_leaves_the_site(target):
    assert i18n.safe_next(target) == "/"


def test_next_keeps_local_paths():
    assert i18n.safe_next("/docs?x=1") == "/docs?x=1"


@pytest.fixture(scope="module")
def extracted() -> dict[str, str]:
    """Every message of the web package, extracted as `pybabel extract -F babel.cfg` does,
    mapped to the file it was found in."""
    with (REPO / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    messages = {}
    for filename, _line, message, _comments, _context in extract_from_dir(
        REPO, method_map, options_map
    ):
        for msgid in (message,) if isinstance(message, str) else message:
            messages.setdefault(msgid, filename)
    assert len(messages) > 10, "extraction found nothing: is babel.cfg still right?"
    return messages


@pytest.fixture(scope="module")
def french() -> Catalog:
    with (i18n.LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale="fr")


def _msgids(message) -> tuple[str, ...]:
    return (message.id,) if isinstance(message.id, str) else tuple(message.id)


def test_every_message_of_the_ui_has_a_french_translation(extracted, french):
    """Fails when a template gains a string that the French catalog lacks: extract with
    babel.cfg's commands, translate, and run the tests again."""
    translated = {}
    for message in french:
        strings = (message.string,) if isinstance(message.string, str) else message.string
        for msgid in _msgids(message):
            translated[msgid] = message.id and not message.fuzzy and all(strings)
    missing = sorted(
        f"{msgid!r} ({path})" for msgid, path in extracted.items() if not translated.get(msgid)
    )
    assert missing == []


def test_the_french_catalog_has_no_fuzzy_obsolete_or_stale_entries(extracted, french):
    assert not french.fuzzy, "the catalog header is marked fuzzy"
    assert [m.id for m in french if m.id and m.fuzzy] == []
    assert list(french.obsolete) == []
    # An entry no template or module uses any more: `pybabel update` would make it obsolete.
    stale = [m.id for m in french if m.id and not set(_msgids(m)) & set(extracted)]
    assert stale == []


def test_french_translations_keep_their_placeholders(french):
    """A misspelt `%(name)s` in a translation would break the page at render time."""
    errors = [(message.id, [str(e) for e in found]) for message, found in french.check()]
    assert errors == []


def test_catalogs_load_for_every_language():
    translations = i18n.load_translations()
    assert set(translations) == set(i18n.LANGUAGES)
    assert translations["fr"].gettext("System status") == "État du système"
    assert translations["en"].gettext("System status") == "System status"
