"""The playground's static files (``GET /playground``), free of Ray: the ingress only routes to them.

Two folders, resolved like ``configs/`` (``orchestra.engine.packaged_config``): the page itself, ``web/``
of the checkout, and the JavaScript SDK's ES modules, ``sdk/js/src``, which the page imports as they are
(no build step, no CDN) from ``/playground/sdk/``. The wheel ships them as the data-only packages
``orchestra.web`` and ``orchestra.web.sdk``; in a checkout (an editable install included) they are read
from the folders beside the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse, Response

__all__ = ["PLAYGROUND", "index_page", "playground_file", "sdk_root", "web_root"]

PLAYGROUND = "/playground"
_CHECKOUT = Path(__file__).resolve().parents[2]
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The page needs nothing from another origin: scripts, styles and sockets are this server's only.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


def _folder(package: str, checkout: Path) -> Path:
    # A folder without __init__.py is a namespace package: its spec lists where it is (str() of
    # importlib.resources.files() would be a MultiplexedPath's repr, not a path).
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else checkout


def web_root() -> Path:
    """The page's folder: ``web/`` of the checkout, ``orchestra/web`` of the wheel."""
    return _folder("orchestra.web", _CHECKOUT / "web")


def sdk_root() -> Path:
    """The SDK's ES modules: ``sdk/js/src`` of the checkout, ``orchestra/web/sdk`` of the wheel."""
    return _folder("orchestra.web.sdk", _CHECKOUT / "sdk" / "js" / "src")


def _resolve(root: Path, path: str) -> Path | None:
    """``path`` (URL path below the root) as a file inside ``root`` with a served type, else None."""
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") or "\\" in p for p in parts):
        return None
    base = root.resolve()
    file = base.joinpath(*parts).resolve()
    if not file.is_relative_to(base) or not file.is_file() or file.suffix not in _TYPES:
        return None
    return file


def playground_file(path: str) -> Response:
    """``/playground/<path>``: ``sdk/...`` from the SDK, the rest from ``web/``; ``""`` is the page."""
    path = path or "index.html"
    root = web_root()
    if path.startswith("sdk/"):
        root, path = sdk_root(), path.removeprefix("sdk/")
    file = _resolve(root, path)
    if file is None:
        raise HTTPException(404)  # the app's handler answers it in the error envelope
    return FileResponse(file, media_type=_TYPES[file.suffix], headers=_HEADERS)


def index_page(version: str) -> Response:
    """``GET /``: where to go from here (the playground, the API docs)."""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>AI Orchestra</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem">
<h1>AI Orchestra {version}</h1>
<ul>
<li><a href="{PLAYGROUND}">Playground</a>: watch a team of agents work, live</li>
<li><a href="/docs">API docs</a> (OpenAPI)</li>
<li><a href="/health">Health</a></li>
</ul>
</body></html>
"""
    return HTMLResponse(body, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
