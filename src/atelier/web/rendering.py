"""Jinja2 rendering in the request's language: one environment per language, each with its
gettext catalog installed, built once by the app factory."""

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import Response

from atelier import __version__
from atelier.web import auth, i18n

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"


def _static_url(path: str) -> str:
    """A root-relative URL for a file under static/, versioned so upgrades bust caches.

    Relative rather than built from the Host header, which a client controls.
    """
    return f"/static/{path}?v={__version__}"


class Renderer:
    def __init__(self, *, default_language: str | None) -> None:
        self.default_language = default_language
        self._templates: dict[str, Jinja2Templates] = {}
        self._translations = i18n.load_translations()
        for lang, translations in self._translations.items():
            env = Environment(
                loader=FileSystemLoader(TEMPLATE_DIR),
                autoescape=select_autoescape(default=True),
                extensions=["jinja2.ext.i18n"],
            )
            env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
            env.globals["static"] = _static_url
            self._templates[lang] = Jinja2Templates(env=env)

    def language(self, request: Request) -> str:
        return i18n.choose_language(
            cookie=request.cookies.get(i18n.COOKIE),
            default=self.default_language,
            accept_language=request.headers.get("accept-language", ""),
        )

    def gettext(self, request: Request, message: str) -> str:
        """`message` in the request's language (for text made outside templates)."""
        return self._translations[self.language(request)].gettext(message)

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        *,
        status_code: int = 200,
    ) -> Response:
        lang = self.language(request)
        full = {
            "csrf_token": auth.csrf_token(request),
            "csrf_field": auth.CSRF_FIELD,
            "lang": lang,
            "languages": i18n.LANGUAGES,
            "version": __version__,
            "current_path": request.url.path,
            **(context or {}),
        }
        response = self._templates[lang].TemplateResponse(
            request, name, full, status_code=status_code
        )
        auth.remember_csrf_cookie(request, response)
        response.headers["Content-Language"] = lang
        response.headers["Vary"] = "Accept-Language, Cookie"
        return response

    def error_page(self, request: Request, status: int) -> Response:
        """The HTML face of an error, for browsers navigating the UI."""
        return self.render(request, "error.html", {"status": status}, status_code=status)
