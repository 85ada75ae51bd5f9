"""Language choice and the French catalog of the web UI."""

import configparser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
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


def _extract_messages() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "babel.cfg")
    method_map = [
        (section.split(": ", 1)[1], section.split(": ", 1)[0]) for section in config.sections()
    ]
    options = {section.split(": ", 1)[1]: dict(config[section]) for section in config.sections()}
    return {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(
            REPO, method_map, options
        )
    }


def test_every_message_of_the_ui_has_a_french_translation():
    """Fails when a template gains a string that the French catalog lacks: extract with
    babel.cfg's commands, translate, and run the tests again."""
    messages = _extract_messages()
    assert len(messages) > 10, "extraction found nothing: is babel.cfg still right?"
    po = i18n.LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po"
    with po.open("rb") as fh:
        catalog = read_po(fh, locale="fr")
    translated = {m.id: m.string for m in catalog if m.id and not m.fuzzy}
    missing = sorted(m for m in messages if not translated.get(m))
    assert missing == []
    assert not catalog.obsolete


def test_catalogs_load_for_every_language():
    translations = i18n.load_translations()
    assert set(translations) == set(i18n.LANGUAGES)
    assert translations["fr"].gettext("System status") == "État du système"
    assert translations["en"].gettext("System status") == "System status"
