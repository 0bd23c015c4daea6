"""The playground's static files: the page and the SDK's modules, nothing else of the checkout."""

from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse

from orchestra.serving._static import index_page, playground_file, sdk_root, web_root


def test_the_page_its_files_and_the_sdk_modules_are_served_with_their_types() -> None:
    for path, media in [
        ("", "text/html"),
        ("index.html", "text/html"),
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("sdk/index.js", "text/javascript"),
        ("sdk/websocket.js", "text/javascript"),
    ]:
        response = playground_file(path)
        assert isinstance(response, FileResponse)
        assert response.media_type is not None and response.media_type.startswith(media), path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in response.headers["content-security-policy"]


def test_every_module_the_sdk_index_imports_is_there() -> None:
    text = (sdk_root() / "index.js").read_text()
    assert (web_root() / "app.js").is_file()
    for line in text.splitlines():
        if " from './" in line:
            name = line.split("from './")[1].split("'")[0]
            assert (sdk_root() / name).is_file(), name


@pytest.mark.parametrize(
    "path",
    ["../serve_app.py", "sdk/../../serve_app.py", "sdk/index.d.ts", "nope.js", ".env.js", "sdk/", "a\\b.js"],
)
def test_anything_else_is_not_found(path: str) -> None:
    with pytest.raises(HTTPException) as info:
        playground_file(path)
    assert info.value.status_code == 404


def test_the_index_links_to_the_playground() -> None:
    body = bytes(index_page("9.9.9").body).decode()
    assert 'href="/playground"' in body and "9.9.9" in body


def test_the_wheel_ships_the_page_and_the_sdk_modules() -> None:
    import tomllib
    from pathlib import Path

    setuptools = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    assert setuptools["package-dir"]["orchestra.web"] == "web"
    assert setuptools["package-dir"]["orchestra.web.sdk"] == "sdk/js/src"
    assert {"*.html", "*.js", "*.css"} <= set(setuptools["package-data"]["orchestra.web"])
    assert "*.js" in setuptools["package-data"]["orchestra.web.sdk"]
