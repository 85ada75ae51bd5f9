"""A real OpenID provider for the single sign-on tests: npm `oidc-provider`
(`tests/oidc_provider/server.js`), run by Node on loopback once per test session.

The fixtures are named through `name=` so that a module importing them (until they move to a
conftest) does not shadow the import with its test parameters.

Without `node`/`npm` the tests that use it are skipped, except under CI (`CI` set), where a
missing Node is a failure rather than a silent gap.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx
import pytest

from atelier.settings import OidcProviderSettings

HARNESS = Path(__file__).resolve().parents[1] / "oidc_provider"
PROVIDER_NAME = "local-idp"
# What Settings.base_url (default) gives for this provider; nothing needs to serve it.
REDIRECT_URI = f"http://127.0.0.1:8000/api/v1/auth/oidc/{PROVIDER_NAME}/callback"
CLIENT_ID = "atelier-tests"
# Characters that RFC 6749 §2.3.1 makes a client form-encode in HTTP Basic credentials.
CLIENT_SECRET = "s3cret:with%odd+chars/ and spaces"
START_TIMEOUT_S = 20
NPM_CI_TIMEOUT_S = 300


@dataclass
class OidcTestProvider:
    """One running provider, its client and a headless way through its login pages."""

    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    log_path: Path

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def settings(self, **overrides) -> OidcProviderSettings:
        values = {
            "name": PROVIDER_NAME,
            "display_name": "Local IdP",
            "discovery_url": self.discovery_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scopes": ["openid", "email", "profile", "groups"],
            "groups_claim": "groups",
        }
        return OidcProviderSettings(**{**values, **overrides})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def log_in(self, authorization_url: str, login: str) -> dict[str, str]:
        """Sign in as `login` on the provider's login and consent pages, as a browser would, and
        return the query parameters of the final redirect to the redirect URI."""
        async with httpx.AsyncClient(timeout=10) as browser:
            response = await browser.get(authorization_url)
            for _ in range(12):
                if response.is_redirect:
                    location = urljoin(str(response.url), response.headers["location"])
                    if location.split("?")[0] == self.redirect_uri:
                        return dict(parse_qsl(urlsplit(location).query))
                    response = await browser.get(location)
                elif response.status_code == 200 and "<form" in response.text:
                    form = _Form.parse(response.text)
                    fields = dict(form.fields)
                    if "login" in fields:
                        fields.update(login=login, password="any password works")
                    response = await browser.post(
                        urljoin(str(response.url), form.action), data=fields
                    )
                else:
                    raise AssertionError(
                        f"provider answered {response.status_code} at {response.url}:\n"
                        f"{response.text[:2000]}"
                    )
            raise AssertionError(f"no redirect to {self.redirect_uri} after 12 steps")


class _Form(HTMLParser):
    """The first form of a page: its action and the names and values of its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._done = False

    @classmethod
    def parse(cls, html: str) -> _Form:
        form = cls()
        form.feed(html)
        if form.action is None:
            raise AssertionError(f"no form on the page:\n{html[:2000]}")
        return form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action") or ""
        elif tag == "input" and self.action is not None and not self._done and values.get("name"):
            self.fields[values["name"]] = values.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._done = True


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"`{tool}` not found: the single sign-on tests need Node.js (20+) and npm"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _install_harness() -> None:
    if (HARNESS / "node_modules" / "oidc-provider").is_dir():
        return
    npm = _require("npm")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=HARNESS,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci failed in {HARNESS}:\n{result.stdout}\n{result.stderr}")


def _run_provider(log_dir: Path, *, token_auth_method: str) -> Iterator[OidcTestProvider]:
    node = _require("node")
    _install_harness()
    log_path = log_dir / "oidc-provider.log"
    env = {
        **os.environ,
        "PORT": "0",  # the system picks a free port; the server prints it
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URI": REDIRECT_URI,
        "TOKEN_AUTH_METHOD": token_auth_method,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [node, "server.js"], cwd=HARNESS, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (match := re.search(r"listening on (http://\S+)", log_path.read_text())):
            if process.poll() is not None:
                pytest.fail(
                    f"oidc-provider exited with {process.returncode}:\n{log_path.read_text()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"oidc-provider not ready in {START_TIMEOUT_S} s:\n{log_path.read_text()}"
                )
            time.sleep(0.05)
        yield OidcTestProvider(
            issuer=match.group(1),
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri=REDIRECT_URI,
            log_path=log_path,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session", name="oidc_provider")
def fixture_oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcTestProvider]:
    """The provider, taking client_secret_basic at its token endpoint (the common case)."""
    yield from _run_provider(
        tmp_path_factory.mktemp("oidc"), token_auth_method="client_secret_basic"
    )


@pytest.fixture(scope="session", name="oidc_provider_post")
def fixture_oidc_provider_post(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OidcTestProvider]:
    """A second provider that advertises and accepts only client_secret_post."""
    yield from _run_provider(
        tmp_path_factory.mktemp("oidc"), token_auth_method="client_secret_post"
    )
