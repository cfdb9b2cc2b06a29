"""The HTTP boundary: unit of work, problem+json, idempotency, pagination, limits, request ids.

A small router of test endpoints is mounted on the real app; it writes to the kernel's own outbox
table, so what it proves holds for every context built the same way.
"""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from allot.kernel.errors import Conflict
from allot.kernel.events import InboxEntry, OutboxEvent, publish
from allot.kernel.idempotency import IdempotencyKey
from allot.kernel.ids import new_id
from allot.kernel.pagination import Page, PageParams, page_params, paginate
from allot.kernel.web.routers import api_router
from allot.kernel.web.uow import ReadSession, WriteSession


class ThingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    amount: int = 0


class ThingOut(BaseModel):
    id: str
    name: str


def _test_router():
    router = api_router("/_test", "test")

    @router.post("/things", status_code=201)
    async def create_thing(body: ThingIn, session: WriteSession, _idem: IdempotencyKey) -> ThingOut:
        event_id = await publish(
            session, type="test.thing", aggregate_type="thing", aggregate_id="1",
            payload={"name": body.name, "amount": body.amount},
        )  # fmt: skip
        return ThingOut(id=str(event_id), name=body.name)

    @router.post("/fail-after-write")
    async def fail_after_write(session: WriteSession) -> dict[str, str]:
        await publish(session, type="test.thing", aggregate_type="t", aggregate_id="1", payload={})
        raise Conflict(detail="rule broken after writing")

    @router.post("/commit-fails")
    async def commit_fails(session: WriteSession) -> dict[str, str]:
        duplicate = new_id()
        session.add(InboxEntry(consumer="c", message_id=duplicate))
        await session.flush()
        session.add(InboxEntry(consumer="c2", message_id=duplicate))
        session.add(InboxEntry(consumer="c", message_id=duplicate))  # violates the PK at commit
        return {"status": "looked fine"}

    @router.get("/things")
    async def list_things(
        session: ReadSession, params: PageParams = page_params_dep
    ) -> Page[ThingOut]:
        stmt = select(OutboxEvent).where(OutboxEvent.type == "test.thing")
        rows, cursor = await paginate(session, stmt, OutboxEvent.id, params)
        return Page(
            items=[ThingOut(id=str(r.id), name=r.payload["name"]) for r in rows],
            next_cursor=cursor,
        )

    return router


from fastapi import Depends  # noqa: E402

page_params_dep = Depends(page_params)


@pytest.fixture
def app(app):
    app.include_router(_test_router())
    return app


async def _count(database, event_type="test.thing"):
    async with database.reader() as session:
        stmt = select(func.count()).select_from(OutboxEvent).where(OutboxEvent.type == event_type)
        return await session.scalar(stmt)


async def test_a_write_is_committed_before_the_response(client, database):
    response = await client.post("/api/v1/_test/things", json={"name": "first"})
    assert response.status_code == 201
    assert await _count(database) == 1


async def test_an_error_after_writing_rolls_everything_back(client, database):
    response = await client.post("/api/v1/_test/fail-after-write")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:allot:problem:conflict"
    assert await _count(database) == 0


async def test_a_failing_commit_never_answers_2xx(client, database):
    response = await client.post("/api/v1/_test/commit-fails")
    assert response.status_code == 409
    async with database.reader() as session:
        assert await session.scalar(select(func.count()).select_from(InboxEntry)) == 0


async def test_malformed_json_is_a_400_problem(client):
    response = await client.post(
        "/api/v1/_test/things",
        content=b'{"name": "x",',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["type"] == "urn:allot:problem:malformed-json"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"name": "x", "colour": "red"}, "body.colour", "extra_forbidden"),
        ({"name": "x", "amount": "many"}, "body.amount", "int_parsing"),
        ({}, "body.name", "missing"),
        ({"name": ""}, "body.name", "string_too_short"),
    ],
)
async def test_invalid_fields_are_named_in_a_422(client, database, body, field, code):
    response = await client.post("/api/v1/_test/things", json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:allot:problem:validation-error"
    assert {"field": field, "code": code} in [
        {"field": e["field"], "code": e["code"]} for e in problem["errors"]
    ]
    assert await _count(database) == 0


async def test_an_oversized_body_is_refused_with_413(client, app):
    limit = app.state.settings.max_request_body_bytes
    response = await client.post("/api/v1/_test/things", json={"name": "x" * (limit + 10)})
    assert response.status_code == 413
    assert response.json()["type"] == "urn:allot:problem:payload-too-large"


async def test_a_streamed_oversized_body_is_refused_with_413(client, app, database):
    limit = app.state.settings.max_request_body_bytes

    async def chunks():
        yield b'{"name": "'
        for _ in range(limit // 1000 + 2):
            yield b"x" * 1000
        yield b'"}'

    response = await client.post(
        "/api/v1/_test/things", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert await _count(database) == 0


async def test_unknown_api_routes_are_404_problems(client):
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:allot:problem:not-found"


async def test_request_ids_are_echoed_or_generated(client):
    echoed = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz", headers={"X-Request-Id": "bad id\n with spaces"})
    assert generated.headers["x-request-id"] not in ("", "bad id\n with spaces")
    assert len(generated.headers["x-request-id"]) == 32


async def test_request_id_is_carried_into_outbox_events(client, database):
    await client.post("/api/v1/_test/things", json={"name": "x"}, headers={"X-Request-Id": "req-7"})
    async with database.reader() as session:
        event = (await session.execute(select(OutboxEvent))).scalar_one()
    assert event.headers["request_id"] == "req-7"
    assert event.payload["correlation_id"] == "req-7"


class TestIdempotency:
    async def test_the_same_key_and_body_replays_the_first_response(self, client, database):
        headers = {"Idempotency-Key": "k-1"}
        first = await client.post("/api/v1/_test/things", json={"name": "a"}, headers=headers)
        again = await client.post(
            "/api/v1/_test/things",
            content=json.dumps({"name": "a"}, indent=2),  # same JSON, other spacing
            headers={**headers, "content-type": "application/json"},
        )
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        assert await _count(database) == 1

    async def test_the_same_key_with_another_body_is_a_409(self, client, database):
        headers = {"Idempotency-Key": "k-2"}
        await client.post("/api/v1/_test/things", json={"name": "a"}, headers=headers)
        other = await client.post("/api/v1/_test/things", json={"name": "b"}, headers=headers)
        assert other.status_code == 409
        assert other.json()["type"] == "urn:allot:problem:idempotency-key-conflict"
        assert await _count(database) == 1

    async def test_a_failed_request_stores_nothing_and_can_be_retried(self, client, database):
        headers = {"Idempotency-Key": "k-3"}
        bad = await client.post("/api/v1/_test/things", json={"name": ""}, headers=headers)
        assert bad.status_code == 422
        good = await client.post("/api/v1/_test/things", json={"name": "ok"}, headers=headers)
        assert good.status_code == 201

    async def test_keys_expire_after_the_retention_window(self, client, database, clock):
        headers = {"Idempotency-Key": "k-4"}
        await client.post("/api/v1/_test/things", json={"name": "a"}, headers=headers)
        clock.advance(24 * 3600 + 1)
        later = await client.post("/api/v1/_test/things", json={"name": "b"}, headers=headers)
        assert later.status_code == 201
        assert "idempotent-replayed" not in later.headers
        assert await _count(database) == 2

    async def test_an_overlong_key_is_a_422_naming_the_header(self, client):
        response = await client.post(
            "/api/v1/_test/things", json={"name": "a"}, headers={"Idempotency-Key": "k" * 256}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "header.Idempotency-Key"


class TestPagination:
    async def test_pages_cover_everything_once_newest_first(self, client):
        names = [f"thing-{n}" for n in range(7)]
        for name in names:
            await client.post("/api/v1/_test/things", json={"name": name})
        seen, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/_test/things", params=params)).json()
            seen += [item["name"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(names))

    @pytest.mark.parametrize("cursor", ["garbage", "eyJ2IjoyfQ", "", "%%%"])
    async def test_a_bad_cursor_is_a_400_problem(self, client, cursor):
        response = await client.get("/api/v1/_test/things", params={"cursor": cursor or "x"})
        assert response.status_code == 400
        assert response.json()["type"] == "urn:allot:problem:invalid-cursor"

    @pytest.mark.parametrize("limit", [0, -1, 201, "ten"])
    async def test_a_bad_limit_is_a_422_naming_it(self, client, limit):
        response = await client.get("/api/v1/_test/things", params={"limit": limit})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "query.limit"


async def test_readiness_reports_the_database(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_metrics_expose_requests_pool_and_backlog(client):
    await client.post("/api/v1/_test/things", json={"name": "x"})
    text = (await client.get("/metrics")).text
    assert (
        'allot_http_requests_total{method="POST",route="/api/v1/_test/things",status="201"}' in text
    )
    assert "allot_outbox_backlog 1.0" in text
    assert "allot_db_pool_size" in text


async def test_openapi_documents_problem_responses(client):
    spec = (await client.get("/api/v1/openapi.json")).json()
    assert "Problem" in spec["components"]["schemas"]
    responses = spec["paths"]["/api/v1/_test/things"]["post"]["responses"]
    assert "application/problem+json" in responses["422"]["content"]
    assert "Idempotency-Key" in [
        p["name"] for p in spec["paths"]["/api/v1/_test/things"]["post"]["parameters"]
    ]


async def test_interactive_docs_use_local_assets_only(client):
    for path in ("/api/docs", "/api/redoc"):
        html = (await client.get(path)).text
        assert "/static/vendor/" in html
        assert "cdn." not in html
        assert "https://" not in html.replace("https://github.com", "")


async def test_concurrent_requests_with_one_key_create_once(client, database):
    import asyncio

    headers = {"Idempotency-Key": "k-race"}
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/_test/things", json={"name": "r"}, headers=headers)
            for _ in range(5)
        )
    )
    assert [r.status_code for r in responses] == [201] * 5
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(1 for r in responses if "idempotent-replayed" in r.headers) == 4
    assert await _count(database) == 1


async def test_an_unexpected_error_is_a_500_problem_with_the_request_id(app, client):
    router = api_router("/_boom", "test")

    @router.get("")
    async def boom() -> dict[str, str]:
        raise RuntimeError("bug")

    app.include_router(router)
    response = await client.get("/api/v1/_boom", headers={"X-Request-Id": "req-500"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-500"
    assert response.json()["type"] == "urn:allot:problem:internal-error"
    assert "bug" not in response.text  # internals stay in the log


async def test_readiness_checks_a_configured_broker(settings, database):
    import asyncio

    import httpx

    from allot.app import create_app

    async def accept(reader, writer):
        writer.close()

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    up_port = listener.sockets[0].getsockname()[1]
    closed = await asyncio.start_server(accept, "127.0.0.1", 0)
    down_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    try:
        for port, expected in ((up_port, 200), (down_port, 503)):
            configured = settings.model_copy(update={"broker_url": f"amqp://127.0.0.1:{port}/"})
            app = create_app(configured, database, run_background=False)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                response = await http.get("/readyz")
            assert response.status_code == expected
            assert (response.json()["checks"]["broker"] == "ok") == (expected == 200)
    finally:
        listener.close()
        await listener.wait_closed()
