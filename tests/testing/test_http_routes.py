"""`@app.http` routes on the control HTTP listener: JSON answers with the
bearer token, 401 without it (and when no token is configured)."""

from __future__ import annotations

import pytest

import sipr
from sipr.testing import serve

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"


def status_app() -> tuple[sipr.App, dict[str, str]]:
    app = sipr.App()
    provisioned: dict[str, str] = {}

    @app.route
    async def route(req: sipr.Request) -> None:
        req.reply(200 if req.from_.uri.user in provisioned else 403)

    @app.http("GET", "/calls")
    async def calls(request: sipr.HttpRequest) -> dict[str, object]:
        stats = app.stats()
        return {"suspended": stats["handlers.suspended"], "users": sorted(provisioned)}

    @app.http("POST", "/users")
    async def add_user(request: sipr.HttpRequest) -> sipr.HttpResponse:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("user"), str):
            return sipr.HttpResponse(400, {"error": 'expected {"user": NAME}'})
        provisioned[body["user"]] = "yes"
        return sipr.HttpResponse(201, {"added": body["user"]})

    return app, provisioned


async def test_app_route_answers_json_with_the_token_and_401_without() -> None:
    app, _ = status_app()
    async with serve(app, http_token=TOKEN) as sut:
        ok = await sut.http("GET", "/calls", token=TOKEN)
        assert ok.status == 200
        assert ok.headers["content-type"] == "application/json"
        assert ok.json() == {"suspended": 0, "users": []}
        assert (await sut.http("GET", "/calls")).status == 401
        wrong = await sut.http("GET", "/calls", token="guess")
        assert wrong.status == 401 and "token" in wrong.json()["error"]


async def test_webhook_provisions_a_user_the_route_then_accepts() -> None:
    app, provisioned = status_app()
    async with serve(app, http_token=TOKEN) as sut:
        mallory = sut.ua("mallory")
        assert (await mallory.request("MESSAGE", "bob")).status == 403
        added = await sut.http("POST", "/users", token=TOKEN, json_body={"user": "mallory"})
        assert (added.status, added.json()) == (201, {"added": "mallory"})
        assert (await mallory.request("MESSAGE", "bob")).status == 200
        bad = await sut.http("POST", "/users", token=TOKEN, json_body=["mallory"])
        assert bad.status == 400
        assert (await sut.http("DELETE", "/users", token=TOKEN)).status == 405
        assert (await sut.http("GET", "/nothing", token=TOKEN)).status == 404
        assert provisioned == {"mallory": "yes"}


async def test_app_routes_refuse_when_no_token_is_configured() -> None:
    app, _ = status_app()
    async with serve(app, http_token="") as sut:
        refused = await sut.http("GET", "/calls")
        assert refused.status == 401 and "--http-token" in refused.json()["error"]


def test_bad_routes_are_refused_at_import() -> None:
    app = sipr.App()
    with pytest.raises(ValueError, match="method"):
        app.http("FETCH", "/x")
    with pytest.raises(ValueError, match="control listener"):
        app.http("GET", "/metrics")
