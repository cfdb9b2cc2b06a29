"""The lead pages in Russian and English: the list with htmx filtering, the intake form with
errors next to their inputs, and the lead page with its status buttons, SLA and timeline."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.conftest import count_queries

from .helpers import caller, lead_desk, move, new_lead, stored

HTML = {"Accept": "text/html"}
HTMX = {"HX-Request": "true"}
LEAD_LINK = re.compile(r'href="/leads/[0-9a-f-]{36}"')


@pytest.fixture
async def manager(database):
    return await caller(database, "manager", locale="en")


@pytest.fixture
async def russian_manager(database):
    return await caller(database, "manager", locale="ru")


async def test_the_list_shows_leads_and_filters_them_with_htmx(client, database, clock, manager):
    await lead_desk(database)
    await new_lead(database, customer_name="Анна Смирнова", amount_minor=15_000_000)
    await new_lead(database, customer_name="Борис Орлов", source="partner")
    page = await client.get("/leads", headers={**manager, **HTML})
    assert page.status_code == 200
    html = page.text
    assert '<form method="get" action="/leads"' in html
    assert 'hx-get="/leads"' in html
    for name in ("q", "status", "assignee", "source", "from", "to"):
        assert f'name="{name}"' in html
    assert "Анна Смирнова" in html
    assert "Борис Орлов" in html
    assert "New lead" in html
    assert "Waiting for an agent" in html
    results = await client.get("/leads", params={"source": "partner"},
                               headers={**manager, **HTML, **HTMX})  # fmt: skip
    assert results.text.lstrip().startswith('<section id="lead-results"')
    assert "Борис Орлов" in results.text
    assert "Анна Смирнова" not in results.text
    bad = await client.get("/leads", params={"from": "yesterday"}, headers={**manager, **HTML})
    assert "Enter a date" in bad.text


async def test_the_list_reads_the_same_statements_however_many_assignees_it_shows(
    client, database, clock, manager
):
    desk = await lead_desk(database, agents=6, capacity=1)

    async def page() -> tuple[int, str]:
        with count_queries(database) as counter:
            response = await client.get("/leads", headers={**manager, **HTML})
        assert response.status_code == 200
        return counter.count, response.text

    await new_lead(database)
    await page()  # the first request also reads the caller's token
    one_assignee, _html = await page()
    for _ in range(5):  # each agent takes one: six assignees on the page
        await new_lead(database)
    six_assignees, html = await page()
    assert six_assignees == one_assignee
    for agent in desk:
        assert f"<td>{agent.name}</td>" in html


async def test_the_list_pages_with_a_next_link(client, database, clock, manager):
    await lead_desk(database, capacity=60)
    for _ in range(51):
        await new_lead(database)
        clock.advance(1)
    html = (await client.get("/leads", headers={**manager, **HTML})).text
    assert len(LEAD_LINK.findall(html)) == 50
    match = re.search(r'href="(/leads\?cursor=[^"]+)"[^>]*rel="next"', html)
    assert match, "no next link"
    older = await client.get(match.group(1).replace("&amp;", "&"), headers={**manager, **HTML})
    assert older.status_code == 200
    assert len(LEAD_LINK.findall(older.text)) == 1
    assert 'rel="next"' not in older.text


async def test_the_list_is_in_russian(client, database, clock, russian_manager):
    await lead_desk(database)
    await new_lead(database, customer_name="Анна")
    html = (await client.get("/leads", headers={**russian_manager, **HTML})).text
    assert "Лиды" in html
    assert "Новый" in html
    assert "Новый лид" in html


async def test_the_form_keeps_values_and_shows_errors_next_to_inputs(
    client, database, clock, manager
):
    page = await client.get("/leads/new", headers={**manager, **HTML})
    assert page.status_code == 200
    for name in ("source", "name", "phone", "email", "amount", "term", "priority"):
        assert f'name="{name}"' in page.text
    form = {"source": "web", "name": "Ольга Ким", "phone": "12345", "email": "olga@",
            "amount": "150 000,50", "term": "x", "priority": "0"}  # fmt: skip
    failed = await client.post("/leads/new", data=form, headers={**manager, **HTML})
    assert failed.status_code == 422
    html = failed.text
    assert 'value="Ольга Ким"' in html
    assert 'value="150 000,50"' in html
    for name in ("phone", "email", "term"):
        assert f'id="f-{name}-error"' in html, name
    assert 'id="f-name-error"' not in html
    assert 'id="f-amount-error"' not in html
    phone_input = re.search(r'<input id="f-phone"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in phone_input


async def test_the_form_creates_a_lead_and_opens_it(client, database, clock, manager):
    [anna] = await lead_desk(database)
    form = {"source": "web", "name": "Ольга Ким", "phone": "8 912 345-67-89", "email": "",
            "amount": "150 000,50", "term": "12", "priority": "3"}  # fmt: skip
    created = await client.post("/leads/new", data=form, headers={**manager, **HTML})
    assert created.status_code == 303
    lead_id = uuid.UUID(created.headers["location"].rsplit("/", 1)[1])
    lead = await stored(database, lead_id)
    assert (lead.amount_minor, lead.term_months, lead.priority) == (15_000_050, 12, 3)
    assert lead.assignee_id == anna.id


async def test_the_lead_page_offers_the_allowed_moves_and_shows_sla_and_timeline(
    client, database, clock, manager
):
    [anna] = await lead_desk(database)
    lead = await new_lead(database, customer_name="Ольга Ким", amount_minor=15_000_000,
                          term_months=12)  # fmt: skip
    clock.advance(300)
    html = (await client.get(f"/leads/{lead.id}", headers={**manager, **HTML})).text
    assert "Ольга Ким" in html
    assert "+79131" in html
    assert 'name="status" value="in_progress"' in html
    assert 'name="status" value="lost"' in html
    assert 'name="lost_reason"' in html
    assert 'name="status" value="won"' not in html  # not allowed from "new"
    assert "10 min left" in html
    assert 'hx-trigger="every 30s"' in html
    assert anna.name in html
    assert "Lead created" in html
    sla = await client.get(f"/leads/{lead.id}", params={"part": "sla"},
                           headers={**manager, **HTML, **HTMX})  # fmt: skip
    assert sla.text.lstrip().startswith('<section id="lead-sla"')
    clock.advance(900)
    html = (await client.get(f"/leads/{lead.id}", headers={**manager, **HTML})).text
    assert "SLA breached" in html


async def test_moving_and_noting_through_the_page(client, database, clock, manager):
    await lead_desk(database)
    lead = await new_lead(database)
    moved = await client.post(f"/leads/{lead.id}/status", data={"status": "in_progress"},
                              headers={**manager, **HTML})  # fmt: skip
    assert moved.status_code == 303
    assert (await stored(database, lead.id)).status == "in_progress"
    refused = await client.post(f"/leads/{lead.id}/status", data={"status": "new"},
                                headers={**manager, **HTML})  # fmt: skip
    assert refused.status_code == 409
    assert "This status change is not allowed" in refused.text
    noted = await client.post(f"/leads/{lead.id}/notes", data={"body": "Ждёт звонка в 15:00"},
                              headers={**manager, **HTML})  # fmt: skip
    assert noted.status_code == 303
    html = (await client.get(f"/leads/{lead.id}", headers={**manager, **HTML})).text
    assert "Ждёт звонка в 15:00" in html
    assert "Status changed: New → In progress" in html
    empty = await client.post(f"/leads/{lead.id}/notes", data={"body": " "},
                              headers={**manager, **HTML})  # fmt: skip
    assert empty.status_code == 422
    assert 'id="f-body-error"' in empty.text


async def test_the_lead_page_in_russian(client, database, clock, russian_manager):
    await lead_desk(database)
    lead = await new_lead(database)
    await move(database, lead.id, "lost", lost_reason="spam")
    html = (await client.get(f"/leads/{lead.id}", headers={**russian_manager, **HTML})).text
    assert "Отказ" in html
    assert "Спам" in html
    assert "Статус изменён: Новый → Отказ" in html
    assert "Лид закрыт." in html


async def test_an_operator_cannot_open_another_operators_lead(client, database, clock):
    await lead_desk(database)
    lead = await new_lead(database)
    operator = await caller(database, "operator")
    response = await client.get(f"/leads/{lead.id}", headers={**operator, **HTML})
    assert response.status_code == 404


async def test_the_lead_page_says_why_the_lead_went_to_its_manager(
    client, database, clock, manager
):
    anna, boris = await lead_desk(database, agents=2, capacity=1)
    first = await new_lead(database)
    second = await new_lead(database)  # the other one: the first's agent is full
    html = (await client.get(f"/leads/{second.id}", headers={**manager, **HTML})).text
    assert 'id="routing-why"' in html
    first_agent = anna if first.assignee_id == anna.id else boris
    second_agent = boris if first_agent is anna else anna
    assert second.assignee_id == second_agent.id
    why = html.split('id="routing-why"')[1].split("</section>")[0]
    assert second_agent.name in why
    # the first's agent had no room left: listed as left out, with the reason
    assert f"{first_agent.name} — no spare capacity" in why
