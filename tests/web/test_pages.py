"""The web shell over HTTP: pages, language switching, fragments, offline assets."""

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest


def lang_of(html: str) -> str:
    return re.search(r'<html lang="(\w+)">', html).group(1)


async def test_landing_page_is_english_by_default(client):
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-language"] == "en"
    assert lang_of(response.text) == "en"
    assert "Your own AI workshop" in response.text


async def test_the_browser_language_is_followed(client):
    response = await client.get("/", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"})
    assert lang_of(response.text) == "fr"
    assert response.headers["content-language"] == "fr"
    assert "Votre atelier d’IA à vous" in response.text
    assert "Your own AI workshop" not in response.text


class TestInstanceDefault:
    @pytest.fixture
    def settings(self, make_settings):
        return make_settings(default_language="fr")

    async def test_the_instance_default_beats_the_browser(self, client):
        response = await client.get("/", headers={"Accept-Language": "en"})
        assert lang_of(response.text) == "fr"

    async def test_the_visitors_choice_beats_the_instance_default(self, client):
        client.cookies.set("atelier_lang", "en")
        response = await client.get("/", headers={"Accept-Language": "fr"})
        assert lang_of(response.text) == "en"


async def test_switching_language_sets_a_cookie_and_goes_back(client):
    response = await client.get("/lang/fr?next=/docs")
    assert response.status_code == 303
    assert response.headers["location"] == "/docs"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("atelier_lang=fr;")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    page = await client.get("/")
    assert lang_of(page.text) == "fr"


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example", "/\\evil.example"])
async def test_switching_language_never_redirects_off_site(client, target):
    response = await client.get("/lang/fr", params={"next": target})
    assert response.headers["location"] == "/"


@pytest.mark.parametrize(
    "target", ["/\t/evil.example", "/\n/evil.example", "/%2F/evil.example", " //evil.example"]
)
async def test_switching_language_lands_on_site_once_the_browser_cleans_the_url(client, target):
    """Browsers drop tabs and newlines from a Location (WHATWG URL); `urljoin` does the same."""
    response = await client.get("/lang/fr", params={"next": target})
    assert response.status_code == 303
    landing = urljoin("http://testserver/lang/fr", response.headers["location"])
    assert urlsplit(landing).netloc == "testserver", response.headers["location"]


async def test_over_https_the_language_cookie_is_secure(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/lang/fr?next=/")
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]
    assert "max-age" in response.headers["strict-transport-security"]


async def test_an_unknown_language_is_a_404_problem(client):
    response = await client.get("/lang/xx")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "en, fr" in response.json()["detail"]


async def test_status_fragment_reports_the_database(client):
    response = await client.get("/fragments/status")
    assert response.status_code == 200
    assert 'data-check="database" data-status="ok"' in response.text
    french = await client.get("/fragments/status", headers={"Accept-Language": "fr"})
    assert "Base de données" in french.text


URL_ATTRIBUTES = {"src", "href", "action", "formaction", "poster", "hx-get", "hx-post"}


class _UrlCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in URL_ATTRIBUTES and value]


def urls_in(html: str) -> list[str]:
    collector = _UrlCollector()
    collector.feed(html)
    collector.close()
    return collector.urls


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", {}),
        ("/", {"Accept-Language": "fr"}),
        ("/fragments/status", {}),
        ("/no-such-page", {"Accept": "text/html"}),
        ("/docs", {}),
    ],
)
async def test_pages_load_nothing_from_another_host(client, path, headers):
    urls = urls_in((await client.get(path, headers=headers)).text)
    assert urls or path == "/fragments/status"
    assert [url for url in urls if urlsplit(url).scheme or urlsplit(url).netloc] == []


async def test_api_docs_use_only_the_vendored_swagger_ui(client):
    docs = (await client.get("/docs")).text
    assets = urls_in(docs)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    assert "/static/vendor/swagger-ui/swagger-ui.css" in assets
    assert [url for url in assets if not url.startswith("/static/")] == []
    assert "'/openapi.json'" in docs


async def test_vendored_assets_are_served(client):
    for path in (
        "/static/vendor/htmx/htmx.min.js",
        "/static/vendor/pico/pico.min.css",
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/css/atelier.css",
    ):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_docs_may_run_swagger_inline_script_but_pages_may_not(client):
    docs_csp = (await client.get("/docs")).headers["content-security-policy"]
    page_csp = (await client.get("/")).headers["content-security-policy"]
    assert "'unsafe-inline'" in docs_csp
    assert "'unsafe-inline'" not in page_csp


async def test_openapi_schema_describes_the_api(client):
    schema = (await client.get("/openapi.json")).json()
    assert schema["info"]["title"] == "Atelier"
    assert "/health" in schema["paths"]
    assert "/readiness" in schema["paths"]
    assert "/" not in schema["paths"]  # UI pages stay out of the API schema


BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


async def test_browsers_get_an_html_error_page_in_their_language(client):
    response = await client.get(
        "/no-such-page", headers={"Accept": BROWSER_ACCEPT, "Accept-Language": "fr"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert lang_of(response.text) == "fr"
    assert "Page introuvable" in response.text
    assert 'data-status="404"' in response.text


async def test_an_html_error_page_keeps_the_allow_header(client):
    response = await client.post("/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert "This page cannot be used that way" in response.text


async def test_the_api_answers_browsers_with_problems_all_the_same(client):
    response = await client.get("/api/v1/nothing", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
