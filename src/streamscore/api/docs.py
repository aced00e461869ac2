"""Interactive API docs at `/docs` served from files in the package, so they work offline.

FastAPI's own `/docs` loads Swagger UI from a CDN; an app built with `docs_url=None,
redoc_url=None` gets this page instead, with a vendored Swagger UI (see `docs/vendor/README.md`)
under `/docs/static/` and the app's own `/openapi.json`.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "docs"
STATIC_PATH = "/docs/static"

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API</title>
<link rel="icon" type="image/png" href="{static}/vendor/favicon-32x32.png">
<link rel="stylesheet" href="{static}/vendor/swagger-ui.css">
</head>
<body data-openapi="{openapi}">
<div id="swagger-ui"></div>
<script src="{static}/vendor/swagger-ui-bundle.js"></script>
<script src="{static}/init.js"></script>
</body>
</html>
"""


def add_docs(app: FastAPI) -> None:
    """Serve `/docs` for `app`'s OpenAPI schema; `app` must not have FastAPI's own `/docs`."""
    if app.openapi_url is None:
        raise ValueError("add_docs needs an app with an openapi_url")
    page = PAGE.format(
        title=html.escape(app.title),
        static=STATIC_PATH,
        openapi=html.escape(app.openapi_url, quote=True),
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="docs-static")
