"""`/docs` works offline: the page and every asset it names come from the app itself."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from streamscore.api.docs import add_docs


@pytest.fixture
def client() -> TestClient:
    app = FastAPI(title="demo", docs_url=None, redoc_url=None)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    add_docs(app)
    return TestClient(app)


def test_page_loads_only_local_assets(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http" not in page.text.lower()  # no CDN, no absolute URL of any kind
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 4  # icon, css, bundle, initializer
    for path in assets:
        assert path.startswith("/docs/static/")
        response = client.get(path)
        assert response.status_code == 200, path
        assert len(response.content) > 100
    assert 'data-openapi="/openapi.json"' in page.text
    assert "/ping" in client.get("/openapi.json").json()["paths"]


def test_initializer_reads_schema_url_and_skips_the_online_validator(client: TestClient) -> None:
    script = client.get("/docs/static/init.js").text
    assert "document.body.dataset.openapi" in script
    assert "validatorUrl: null" in script
    bundle = client.get("/docs/static/vendor/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"]
    assert "SwaggerUIBundle" in bundle.text


def test_docs_are_not_in_the_schema(client: TestClient) -> None:
    assert "/docs" not in client.get("/openapi.json").json()["paths"]


def test_an_app_without_a_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="openapi_url"):
        add_docs(FastAPI(openapi_url=None, docs_url=None, redoc_url=None))
