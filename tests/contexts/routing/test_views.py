"""Routing pages as a browser uses them: the inbox (status, offers, items), the board, and the
queue and agent admin pages. Requests carry Accept: text/html and CSRF tokens like real forms."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from allot.contexts.identity import passwords
from allot.contexts.routing.models import Agent, Queue
from tests.conftest import count_queries
from tests.factories import csrf_token, login, make_user

from .helpers import agent, items, make_agent, make_queue, offers, submit

HTML = {"Accept": "text/html", "Accept-Language": "en"}
HTMX = {**HTML, "HX-Request": "true"}


@pytest.fixture(autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    previous = passwords.use_hasher(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    yield
    passwords.use_hasher(previous)


async def signed_in(client, database, *roles: str, locale: str = "en"):
    user = await make_user(database, roles=roles, locale=locale)
    assert (await login(client, user.email)).status_code == 303
    return user


async def post_form(client, path: str, data: dict, *, page: str, headers=HTML):
    token = await csrf_token(client, page)
    return await client.post(path, data={**data, "csrf_token": token}, headers=headers)


def cell(html: str, row_attr: str, column: str) -> str:
    """The text of one table cell, found by its row's data attribute and its column."""
    row = re.search(rf"<tr {row_attr}>(.*?)</tr>", html, re.S)
    assert row, f"no row {row_attr}"
    value = re.search(rf'data-column="{column}">(.*?)</td>', row.group(1), re.S)
    assert value, f"no {column} in row {row_attr}"
    return " ".join(re.sub(r"<[^>]+>", " ", value.group(1)).split())


# -- who may open what ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("operator", {"/inbox"}),
        ("analyst", {"/board"}),
        ("manager", {"/inbox", "/board", "/routing/queues", "/routing/agents"}),
    ],
)
async def test_pages_open_for_the_roles_that_need_them(client, database, role, allowed):
    await signed_in(client, database, role)
    for path in ("/inbox", "/board", "/routing/queues", "/routing/agents"):
        response = await client.get(path, headers=HTML)
        assert response.status_code == (200 if path in allowed else 403), path


async def test_signed_out_browsers_are_sent_to_sign_in(client, database):
    response = await client.get("/inbox", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Finbox"


async def test_a_user_who_is_no_agent_gets_a_friendly_note(client, database):
    await signed_in(client, database, "operator")
    page = await client.get("/inbox", headers=HTML)
    assert "You are not set up as an agent yet" in page.text
    assert "sse-connect" not in page.text


# -- the inbox --------------------------------------------------------------------------------
async def test_the_inbox_shows_status_offers_with_countdown_and_a_live_stream(
    client, database, clock
):
    user = await signed_in(client, database, "operator")
    await make_queue(database, offer_mode="offer", offer_timeout_seconds=90)
    anna = await make_agent(database, email=user.email, capacity=3)
    lead_id = uuid.uuid4()
    await submit(database, reference=f"lead:{lead_id}")
    clock.advance(30)
    page = await client.get("/inbox", headers=HTML)
    assert page.status_code == 200
    assert 'sse-connect="/inbox/stream"' in page.text
    assert f'data-heartbeat-url="/api/v1/agents/{anna.id}/heartbeat"' in page.text
    assert "You are shown as Available to managers." in page.text
    assert 'data-countdown="60"' in page.text
    assert ">1:00</time>" in page.text
    assert f"lead:{lead_id}" in page.text
    assert "My load: 1 of 3" in page.text  # the open offer holds capacity
    assert '<script src="/static/routing.js" defer></script>' in page.text


async def test_accepting_an_offer_from_the_inbox_assigns_it(client, database, clock):
    user = await signed_in(client, database, "operator")
    await make_queue(database, offer_mode="offer")
    anna = await make_agent(database, email=user.email)
    lead_id = uuid.uuid4()
    await submit(database, reference=f"lead:{lead_id}")
    [offer] = await offers(database)
    response = await post_form(
        client, f"/inbox/offers/{offer.id}/accept", {}, page="/inbox", headers=HTMX
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="inbox-panel"')  # just the panel
    assert "No offers right now." in response.text
    assert f'<a href="/leads/{lead_id}">lead:{lead_id}</a>' in response.text
    [item] = await items(database)
    assert (item.state, item.owner_agent_id) == ("assigned", anna.id)


async def test_a_form_post_without_htmx_returns_to_the_inbox(client, database, clock):
    user = await signed_in(client, database, "operator")
    await make_queue(database, offer_mode="offer")
    await make_agent(database, email=user.email)
    await submit(database, reference="request:7")
    [offer] = await offers(database)
    response = await post_form(client, f"/inbox/offers/{offer.id}/decline", {}, page="/inbox")
    assert response.status_code == 303
    assert response.headers["location"] == "/inbox"
    [declined] = await offers(database)
    assert declined.status == "declined"
    assert (await items(database))[0].state == "waiting"  # nobody else to offer it to


async def test_an_offer_no_longer_open_is_explained(client, database, clock):
    user = await signed_in(client, database, "operator")
    await make_queue(database, offer_mode="offer")
    await make_agent(database, email=user.email)
    await submit(database)
    [offer] = await offers(database)
    token = await csrf_token(client, "/inbox")
    path = f"/inbox/offers/{offer.id}/decline"
    await client.post(path, data={"csrf_token": token}, headers=HTMX)
    late = await client.post(
        f"/inbox/offers/{offer.id}/accept", data={"csrf_token": token}, headers=HTML
    )
    assert late.status_code == 409
    assert "This offer is no longer open" in late.text


async def test_other_agents_offers_cannot_be_answered(client, database, clock):
    other = await make_user(database, roles=["operator"], password=None)
    await make_queue(database, offer_mode="offer")
    await make_agent(database, email=other.email)
    me = await signed_in(client, database, "operator")
    await make_agent(database, email=me.email, capacity=0)
    await submit(database)
    [offer] = await offers(database)
    response = await post_form(client, f"/inbox/offers/{offer.id}/accept", {}, page="/inbox")
    assert response.status_code == 404
    assert (await offers(database))[0].status == "pending"


async def test_the_status_switch_changes_my_availability(client, database, clock):
    user = await signed_in(client, database, "operator")
    await make_queue(database)
    anna = await make_agent(database, email=user.email, status="offline")
    await submit(database, reference="lead:waiting")
    response = await post_form(
        client, "/inbox/status", {"status": "available"}, page="/inbox", headers=HTMX
    )
    assert response.status_code == 200
    assert (await agent(database, anna.id)).status == "available"
    assert re.search(r'value="available"\s+class=""\s+aria-pressed="true"', response.text)
    assert "lead:waiting" in response.text  # taking work placed the waiting item at once
    bad = await post_form(client, "/inbox/status", {"status": "asleep"}, page="/inbox")
    assert bad.status_code == 422
    assert (await agent(database, anna.id)).status == "available"


# -- the board --------------------------------------------------------------------------------
async def test_the_board_shows_counts_that_match_the_data(client, database, clock):
    await signed_in(client, database, "manager")
    direct = await make_queue(database, name="Direct")
    offered = await make_queue(
        database, name="Offers", offer_mode="offer", member_expression='"cards" in skills'
    )
    anna = await make_agent(database, name="Anna", capacity=2)
    await make_agent(database, name="Boris", capacity=1, skills=["cards"])
    await make_agent(database, name="Vera", capacity=1, skills=["cards"], status="away")
    for n in range(4):  # Anna takes two, two wait
        await submit(database, queue_id=direct.id, reference=f"d{n}")
    clock.advance(90)
    await submit(database, queue_id=offered.id, reference="o1")  # offered to Boris
    await submit(database, queue_id=offered.id, reference="o2")  # Boris is full: waits
    clock.advance(30)

    page = await client.get("/board", headers=HTML)
    assert page.status_code == 200
    html = page.text
    row = f'data-queue-id="{direct.id}"'
    assert (cell(html, row, "waiting"), cell(html, row, "offered")) == ("2", "0")
    assert cell(html, row, "assigned") == "2"
    assert cell(html, row, "members") == "0 of 1"  # Anna is full: not available
    assert 'data-elapsed="120"' in html  # the oldest waiting item of Direct
    row = f'data-queue-id="{offered.id}"'
    assert (cell(html, row, "waiting"), cell(html, row, "offered")) == ("1", "1")
    assert cell(html, row, "members") == "0 of 2"
    anna_row = f'data-agent-id="{anna.id}"'
    assert cell(html, anna_row, "status") == "Available"
    assert '<progress value="2" max="2"' in html
    assert 'sse-connect="/board/stream"' in html


async def test_the_board_panel_costs_the_same_queries_for_many_queues_and_agents(
    client, database, clock
):
    await signed_in(client, database, "manager")
    await make_queue(database)
    await make_agent(database)

    async def panel_queries() -> int:
        with count_queries(database) as counter:
            response = await client.get("/board/panel", headers=HTMX)
        assert response.status_code == 200
        assert response.text.lstrip().startswith('<section id="board-panel"')
        return counter.count

    few = await panel_queries()
    for _ in range(5):
        await make_queue(database)
        await make_agent(database)
        await submit(database)
    assert await panel_queries() == few


# -- admin: queues and agents -----------------------------------------------------------------
async def test_a_manager_adds_a_queue_and_a_bad_expression_is_shown_at_its_field(client, database):
    await signed_in(client, database, "manager")
    form = {
        "name": "Loans",
        "work_kinds": "lead, request",
        "member_expression": '"loans" in skills and',
        "member_teams": "",
        "strategy": "round_robin",
        "offer_mode": "offer",
        "offer_timeout_seconds": "60",
        "broadcast_size": "3",
        "reclaim_grace_seconds": "300",
        "priority": "5",
        "auto_away_after_misses": "",
        "first_response_seconds": "",
        "scorer": "",
    }
    bad = await post_form(client, "/routing/queues", form, page="/routing/queues/new")
    assert bad.status_code == 422
    assert 'aria-invalid="true" aria-describedby="f-member_expression-error"' in bad.text
    assert "The expression has a syntax error" in bad.text
    assert 'value="Loans"' in bad.text  # what was typed is kept
    form["member_expression"] = '"loans" in skills'
    good = await post_form(client, "/routing/queues", form, page="/routing/queues/new")
    assert good.status_code == 303
    async with database.reader() as session:
        queue = await session.scalar(select(Queue).where(Queue.name == "Loans"))
    assert (queue.work_kinds, queue.strategy, queue.offer_mode) == (
        ["lead", "request"],
        "round_robin",
        "offer",
    )
    assert (queue.offer_timeout_seconds, queue.priority, queue.first_response_seconds) == (
        60,
        5,
        None,
    )
    listing = await client.get("/routing/queues?saved=1", headers=HTML)
    assert "Queue saved." in listing.text
    assert "Loans" in listing.text

    edit = await post_form(
        client,
        f"/routing/queues/{queue.id}",
        {**form, "offer_timeout_seconds": "1"},
        page=f"/routing/queues/{queue.id}",
    )
    assert edit.status_code == 422
    assert "Must be at least 5." in edit.text


async def test_a_manager_adds_and_edits_an_agent_with_a_validated_schedule(client, database):
    await signed_in(client, database, "manager")
    form = {
        "name": "Olga",
        "email": "olga@example.com",
        "capacity": "3",
        "skills": "loans, cards",
        "languages": "ru",
        "regions": "",
        "teams": "",
        "weight": "1.5",
        "schedule": '{"weekly": {"mon": [["09:00", "25:00"]]}}',
        "daily_quota": "",
        "monthly_quota": "",
        "status": "away",
    }
    bad = await post_form(client, "/routing/agents", form, page="/routing/agents/new")
    assert bad.status_code == 422
    assert 'aria-describedby="f-schedule-error"' in bad.text
    assert "Times are written HH:MM" in bad.text
    not_json = await post_form(
        client, "/routing/agents", {**form, "schedule": "{mon"}, page="/routing/agents/new"
    )
    assert not_json.status_code == 422
    assert "Not valid JSON" in not_json.text
    form["schedule"] = ""
    assert (
        await post_form(client, "/routing/agents", form, page="/routing/agents/new")
    ).status_code == 303
    async with database.reader() as session:
        olga = await session.scalar(select(Agent).where(Agent.name == "Olga"))
    assert (olga.capacity, olga.weight, olga.status) == (3, 1.5, "away")
    assert olga.attributes["skills"] == ["cards", "loans"]
    assert olga.user_id is not None

    edited = await post_form(
        client,
        f"/routing/agents/{olga.id}",
        {**form, "capacity": "4", "daily_quota": "20", "is_active": "on"},
        page=f"/routing/agents/{olga.id}",
    )
    assert edited.status_code == 303
    status = await post_form(
        client,
        f"/routing/agents/{olga.id}/status",
        {"status": "available"},
        page="/routing/agents",
    )
    assert status.status_code == 303
    olga = await agent(database, olga.id)
    assert (olga.capacity, olga.daily_quota, olga.status) == (4, 20, "available")


async def test_admin_forms_refuse_requests_without_a_csrf_token(client, database):
    await signed_in(client, database, "manager")
    response = await client.post("/routing/queues", data={"name": "X"}, headers=HTML)
    assert response.status_code == 403
    async with database.reader() as session:
        assert await session.scalar(select(Queue.id)) is None


async def test_the_inbox_speaks_russian(client, database, clock):
    user = await signed_in(client, database, "operator", locale="ru")
    await make_agent(database, email=user.email)
    page = await client.get("/inbox", headers={"Accept": "text/html"})
    assert "Мой статус" in page.text
    assert "Руководители видят ваш статус: Доступен." in page.text
    assert "Назначено мне" in page.text
