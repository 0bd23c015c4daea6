"""The proxy middleware: an error the proxy makes itself reaches clients in the spec's envelope."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from orchestra.serving._proxy import middlewares


async def _plain_failure(request: Request) -> Response:
    # What Serve's proxy answers when the replica that had the request died.
    return PlainTextResponse("Internal Server Error", status_code=500, headers={"x-request-id": "from-serve"})


async def _app_error(request: Request) -> Response:
    return JSONResponse({"success": False, "error": {"code": "INTERNAL_ERROR"}}, status_code=500)


async def _raises(request: Request) -> Response:
    raise RuntimeError("the replica died")  # what Serve's proxy does when its replica is gone


async def _ok(request: Request) -> Response:
    return PlainTextResponse("fine")


def _client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/down", _plain_failure),
            Route("/raises", _raises),
            Route("/app", _app_error),
            Route("/ok", _ok),
        ],
        middleware=middlewares(),
    )
    return TestClient(app, raise_server_exceptions=False)


def test_a_plain_proxy_failure_becomes_a_503_envelope() -> None:
    r = _client().get("/down")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    body = r.json()
    assert body["success"] is False and body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["metadata"]["request_id"] == "from-serve" == r.headers["x-request-id"]


def test_an_exception_in_the_proxy_becomes_a_503_envelope() -> None:
    r = _client().get("/raises", headers={"X-Request-ID": "0b0e8f2c-7d9b-4a55-9e57-6f7f1c1f3a10"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert r.json()["metadata"]["request_id"] == "0b0e8f2c-7d9b-4a55-9e57-6f7f1c1f3a10"


def test_answers_of_the_application_pass_untouched() -> None:
    client = _client()
    app_error = client.get("/app")
    assert app_error.status_code == 500 and app_error.json()["error"]["code"] == "INTERNAL_ERROR"
    ok = client.get("/ok")
    assert ok.status_code == 200 and ok.text == "fine"
