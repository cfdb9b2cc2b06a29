"""The leads API contract, end to end through HTTP and the real database."""

from __future__ import annotations

import uuid

import pytest

from allot.contexts.leads import events
from tests.conftest import count_queries

from .helpers import (
    caller,
    events_of,
    lead_body,
    lead_desk,
    operator_agent,
    stored,
)


@pytest.fixture
async def manager(database):
    return await caller(database, "manager")


async def post_lead(client, headers, **overrides):
    return await client.post("/api/v1/leads", json=lead_body(**overrides), headers=headers)


async def test_creating_a_lead_answers_201_with_its_id_status_customer_and_assignee(
    client, database, clock, manager
):
    [anna] = await lead_desk(database)
    body = lead_body(product={"amount_minor": 15_000_000, "term_months": 12}, priority=7,
                     attributes={"region": "msk"})  # fmt: skip
    response = await client.post("/api/v1/leads", json=body, headers=manager)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "new"
    assert created["assignee_id"] == str(anna.id)
    assert uuid.UUID(created["customer_id"])
    assert created["product"] == {"amount_minor": 15_000_000, "currency": "RUB", "term_months": 12}
    assert created["sla"] == "pending"
    assert created["first_response_due_at"].startswith("2026-01-05T09:15:00")
    lead = await stored(database, uuid.UUID(created["id"]))
    assert (lead.priority, lead.attributes) == (7, {"region": "msk"})


async def test_with_nobody_to_take_it_the_assignee_is_null(client, database, clock, manager):
    response = await post_lead(client, manager)
    assert response.status_code == 201
    assert response.json()["assignee_id"] is None


async def test_an_idempotency_key_replays_the_first_response(client, database, clock, manager):
    await lead_desk(database)
    body = lead_body()
    headers = {**manager, "Idempotency-Key": "form-submit-42"}
    first = await client.post("/api/v1/leads", json=body, headers=headers)
    again = await client.post("/api/v1/leads", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(await events_of(database, events.LEAD_CREATED)) == 1
    other = await client.post("/api/v1/leads", json=lead_body(), headers=headers)
    assert other.status_code == 409
    assert other.json()["type"] == "urn:allot:problem:idempotency-key-conflict"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"colour": "red"}, "body.colour"),
        ({"customer": {"name": "Ира", "telephone": "1"}}, "body.customer.telephone"),
        ({"customer": {"name": "Ира", "phone": "12345"}}, "body.customer.phone"),
        ({"customer": {"name": "Ира", "email": "not-an-email"}}, "body.customer.email"),
        ({"source": "Web Site!"}, "body.source"),
        ({"product": {"amount_minor": 10.5}}, "body.product.amount_minor"),
        ({"product": {"currency": "R1B"}}, "body.product.currency"),
        ({"priority": 500}, "body.priority"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    client, database, clock, manager, overrides, field
):
    response = await post_lead(client, manager, **overrides)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]
    assert await events_of(database, events.LEAD_CREATED) == []


async def test_a_second_lead_with_the_same_source_and_external_id_is_a_409_naming_the_first(
    client, database, clock, manager
):
    first = await post_lead(client, manager, source="partner", external_id="P-77")
    second = await post_lead(client, manager, source="partner", external_id="P-77")
    assert second.status_code == 409
    problem = second.json()
    assert problem["existing_id"] == first.json()["id"]
    assert problem["type"] == "urn:allot:problem:conflict"


async def test_status_changes_follow_the_pipeline(client, database, clock, manager):
    await lead_desk(database)
    lead_id = (await post_lead(client, manager)).json()["id"]
    url = f"/api/v1/leads/{lead_id}/status"
    invalid = await client.post(url, json={"status": "won"}, headers=manager)
    assert invalid.status_code == 409
    problem = invalid.json()
    assert problem["type"] == "urn:allot:problem:invalid-transition"
    assert (problem["from_status"], problem["to_status"]) == ("new", "won")
    moved = await client.post(url, json={"status": "in_progress"}, headers=manager)
    assert moved.status_code == 200
    assert moved.json()["status"] == "in_progress"
    assert moved.json()["sla"] == "met"
    lost = await client.post(url, json={"status": "lost", "lost_reason": "spam"}, headers=manager)
    assert (lost.json()["status"], lost.json()["lost_reason"]) == ("lost", "spam")
    unknown = await client.post(url, json={"status": "lost", "lost_reason": "x"}, headers=manager)
    assert unknown.status_code == 422


async def test_notes_and_the_timeline(client, database, clock, manager):
    await lead_desk(database)
    lead_id = (await post_lead(client, manager)).json()["id"]
    added = await client.post(
        f"/api/v1/leads/{lead_id}/notes", json={"body": "Перезвонить завтра"}, headers=manager
    )
    assert added.status_code == 201
    assert added.json()["kind"] == "note"
    clock.advance(5)
    await client.post(f"/api/v1/leads/{lead_id}/status", json={"status": "in_progress"},
                      headers=manager)  # fmt: skip
    timeline = (await client.get(f"/api/v1/leads/{lead_id}/timeline", headers=manager)).json()
    assert [e["kind"] for e in timeline["items"]] == [
        "status_changed", "note", "assigned", "created"
    ]  # fmt: skip
    assert timeline["items"][1]["body"] == "Перезвонить завтра"
    assert timeline["items"][1]["id"] == added.json()["id"]
    empty = await client.post(
        f"/api/v1/leads/{lead_id}/notes", json={"body": "   "}, headers=manager
    )
    assert empty.status_code == 422
    assert empty.json()["errors"][0]["field"] == "body.body"


async def test_get_one_lead_with_its_customer(client, database, clock, manager):
    customer = {"name": "Олег", "phone": "89123456789", "email": "Oleg@Example.ru"}
    lead_id = (await post_lead(client, manager, customer=customer)).json()["id"]
    lead = (await client.get(f"/api/v1/leads/{lead_id}", headers=manager)).json()
    assert lead["customer"]["name"] == "Олег"
    assert lead["customer"]["phones"] == ["+79123456789"]
    assert lead["customer"]["emails"] == ["oleg@example.ru"]
    missing = await client.get(f"/api/v1/leads/{uuid.uuid4()}", headers=manager)
    assert missing.status_code == 404


async def test_patch_changes_product_and_attributes(client, database, clock, manager):
    lead_id = (await post_lead(client, manager)).json()["id"]
    response = await client.patch(
        f"/api/v1/leads/{lead_id}",
        json={"product": {"amount_minor": 5_000_000}, "attributes": {"region": "spb"}},
        headers=manager,
    )
    assert response.status_code == 200
    assert response.json()["product"]["amount_minor"] == 5_000_000
    assert response.json()["attributes"] == {"region": "spb"}
    [updated] = await events_of(database, events.LEAD_UPDATED)
    assert updated.payload["changed"] == ["amount_minor", "attributes", "currency"]


async def test_list_filters(client, database, clock, manager):
    [anna] = await lead_desk(database, agents=1, capacity=1)
    anna_smirnova = {"name": "Анна Смирнова", "phone": "+79161234567"}
    web = (await post_lead(client, manager, source="website", customer=anna_smirnova)).json()
    clock.advance(86_400)
    boris = {"name": "Борис Орлов", "email": "boris@example.ru"}
    partner = (await post_lead(client, manager, source="partner", customer=boris)).json()
    await client.post(f"/api/v1/leads/{web['id']}/status", json={"status": "in_progress"},
                      headers=manager)  # fmt: skip

    async def ids(**params):
        response = await client.get("/api/v1/leads", params=params, headers=manager)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids() == [partner["id"], web["id"]]
    assert await ids(status="in_progress") == [web["id"]]
    assert await ids(source="partner") == [partner["id"]]
    assert await ids(assignee_id=str(anna.id)) == [web["id"]]
    assert await ids(assignee_id="none") == [partner["id"]]
    assert await ids(created_from="2026-01-06T00:00:00Z") == [partner["id"]]
    assert await ids(created_to="2026-01-06T00:00:00+00:00") == [web["id"]]
    assert await ids(q="смирнова") == [web["id"]]
    assert await ids(q="8 916 123-45-67") == [web["id"]]
    assert await ids(q="boris@") == [partner["id"]]
    assert await ids(q="nobody") == []
    bad = await client.get("/api/v1/leads", params={"assignee_id": "x"}, headers=manager)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.assignee_id"


async def test_pages_follow_the_cursor_with_a_constant_query_budget(
    client, database, clock, manager
):
    await lead_desk(database, agents=2, capacity=50)
    created = []
    for _ in range(25):
        created.append((await post_lead(client, manager)).json()["id"])
        clock.advance(1)
    seen, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/leads", params=params, headers=manager)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    budgets = []
    for limit in (2, 20):
        with count_queries(database) as counter:
            response = await client.get("/api/v1/leads", params={"limit": limit}, headers=manager)
        assert len(response.json()["items"]) == limit
        budgets.append(counter.count)
    assert budgets[0] == budgets[1]
    tampered = await client.get("/api/v1/leads", params={"cursor": "nope"}, headers=manager)
    assert tampered.status_code == 400


async def test_operators_see_and_change_only_their_own_leads(client, database, clock, manager):
    await lead_desk(database, agents=0)
    olga, olga_headers = await operator_agent(database, capacity=1)
    ivan, _ivan_headers = await operator_agent(database, capacity=1)
    first = (await post_lead(client, manager)).json()
    second = (await post_lead(client, manager)).json()
    mine = first if first["assignee_id"] == str(olga.id) else second
    theirs = second if mine is first else first
    assert theirs["assignee_id"] == str(ivan.id)
    own = await client.get(f"/api/v1/leads/{mine['id']}", headers=olga_headers)
    assert own.status_code == 200
    for method, path, json in (
        ("GET", f"/api/v1/leads/{theirs['id']}", None),
        ("GET", f"/api/v1/leads/{theirs['id']}/timeline", None),
        ("POST", f"/api/v1/leads/{theirs['id']}/status", {"status": "in_progress"}),
        ("POST", f"/api/v1/leads/{theirs['id']}/notes", {"body": "hi"}),
        ("PATCH", f"/api/v1/leads/{theirs['id']}", {"attributes": {}}),
    ):
        response = await client.request(method, path, json=json, headers=olga_headers)
        assert response.status_code == 404, (method, path, response.text)
    listed = (await client.get("/api/v1/leads", headers=olga_headers)).json()["items"]
    assert [item["id"] for item in listed] == [mine["id"]]
    # Her own note is her first response.
    await client.post(f"/api/v1/leads/{mine['id']}/notes", json={"body": "Позвонила"},
                      headers=olga_headers)  # fmt: skip
    assert (await client.get(f"/api/v1/leads/{mine['id']}", headers=olga_headers)).json()[
        "sla"
    ] == "met"


async def test_analysts_read_but_cannot_write(client, database, clock, manager):
    analyst = await caller(database, "analyst")
    lead_id = (await post_lead(client, manager)).json()["id"]
    assert (await client.get(f"/api/v1/leads/{lead_id}", headers=analyst)).status_code == 200
    response = await client.post(
        f"/api/v1/leads/{lead_id}/status", json={"status": "in_progress"}, headers=analyst
    )
    assert response.status_code == 403
    assert (await post_lead(client, analyst)).status_code == 403
    assert (await client.get("/api/v1/leads")).status_code == 401


async def test_the_pipeline_can_be_read_and_replaced_by_managers(client, database, clock, manager):
    operator = await caller(database, "operator")
    current = (await client.get("/api/v1/lead-pipeline", headers=operator)).json()
    assert [s["key"] for s in current["statuses"]] == [
        "new", "in_progress", "qualified", "won", "lost"
    ]  # fmt: skip
    assert current["statuses"][0] == {
        "key": "new", "labels": {"ru": "Новый", "en": "New"}, "order": 10,
        "initial": True, "terminal": False, "won": False,
    }  # fmt: skip
    assert {"from": "qualified", "to": "won"} in current["transitions"]
    shorter = {
        "statuses": [
            {"key": "new", "labels": {"ru": "Новый", "en": "New"}, "order": 1, "initial": True},
            {"key": "won", "labels": {"ru": "Успех", "en": "Won"}, "order": 2, "terminal": True,
             "won": True},
        ],
        "transitions": [{"from": "new", "to": "won"}],
    }  # fmt: skip
    forbidden = await client.put("/api/v1/lead-pipeline", json=shorter, headers=operator)
    assert forbidden.status_code == 403
    replaced = await client.put("/api/v1/lead-pipeline", json=shorter, headers=manager)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["transitions"] == [{"from": "new", "to": "won"}]
    lead_id = (await post_lead(client, manager)).json()["id"]
    won = await client.post(f"/api/v1/leads/{lead_id}/status", json={"status": "won"},
                            headers=manager)  # fmt: skip
    assert won.json()["status"] == "won"
    broken = {**shorter, "transitions": [{"from": "won", "to": "new"}]}
    invalid = await client.put("/api/v1/lead-pipeline", json=broken, headers=manager)
    assert invalid.status_code == 422
    assert [e["field"] for e in invalid.json()["errors"]] == ["body.transitions.0.from"]


async def test_first_response_sla_per_source(client, database, clock, manager):
    response = await client.put(
        "/api/v1/lead-sla/partner", json={"first_response_seconds": 600}, headers=manager
    )
    assert response.status_code == 200
    lead = (await post_lead(client, manager, source="partner")).json()
    assert lead["first_response_due_at"].startswith("2026-01-05T09:10:00")
    listed = (await client.get("/api/v1/lead-sla", headers=manager)).json()
    assert [(p["source"], p["first_response_seconds"]) for p in listed] == [("partner", 600)]
    bad = await client.put("/api/v1/lead-sla/Bad Source", json={"first_response_seconds": 600},
                           headers=manager)  # fmt: skip
    assert bad.status_code == 422


async def test_the_openapi_document_describes_the_leads_api(client):
    schema = (await client.get("/api/v1/openapi.json")).json()
    create = schema["paths"]["/api/v1/leads"]["post"]
    assert create["summary"] == "Take a lead in"
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
    assert "existing_id" in str(create["responses"]["409"])
    body = schema["components"]["schemas"]["LeadCreate"]
    assert body["examples"][0]["customer"]["phone"]
    for path in ("/api/v1/leads/{lead_id}/status", "/api/v1/leads/{lead_id}/timeline",
                 "/api/v1/lead-pipeline", "/api/v1/lead-sla/{source}"):  # fmt: skip
        assert path in schema["paths"]
