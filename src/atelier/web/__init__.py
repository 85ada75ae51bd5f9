"""The server-rendered web UI: Jinja2 pages and HTMX fragments in English and French, with every
script and style vendored under `static/` so it works offline."""
