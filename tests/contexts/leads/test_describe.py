"""The inbox shows leads the way an operator needs them: routing asks the describer that leads
registered for `lead:` references (routing never imports leads), in one batch per page."""

from __future__ import annotations

import re
import uuid

from allot.contexts import routing
from allot.contexts.routing import service as routing_service
from allot.contexts.routing.references import describe_references
from tests.conftest import count_queries
from tests.contexts.routing.helpers import make_agent, make_queue, offers, submit
from tests.factories import auth_headers, make_user

from .helpers import new_lead

HTML = {"Accept": "text/html"}
THIN, NBSP = "\u202f", "\u00a0"


async def inbox_operator(database, *, locale: str = "en", capacity: int = 10):
    """An operator whose agent takes offers from a lead queue, and their bearer headers."""
    await make_queue(database, offer_mode="offer", offer_timeout_seconds=600)
    user = await make_user(database, roles=("operator",), locale=locale)
    agent = await make_agent(database, email=user.email, capacity=capacity)
    return agent, await auth_headers(database, user)


async def accept(database, offer_id, agent_id) -> None:
    async with database.transaction() as session:
        await routing_service.accept_offer(session, offer_id, agent_id)


def row_of(html: str, offer_id) -> str:
    row = re.search(rf'<tr data-offer-id="{offer_id}">(.*?)</tr>', html, re.S)
    assert row, f"no row for offer {offer_id}"
    return " ".join(re.sub(r"<[^>]+>", " ", row.group(1)).split())


async def test_an_offer_shows_customer_phone_loan_source_priority_age_and_sla(
    client, database, clock
):
    _agent, headers = await inbox_operator(database)
    lead = await new_lead(
        database, customer_name="Ольга Ким", customer_phone="8 912 345 67 89", source="bankiros",
        amount_minor=15_000_000, term_months=12, priority=7,
    )  # fmt: skip
    [offer] = await offers(database)
    clock.advance(5 * 60)
    html = (await client.get("/inbox", headers={**headers, **HTML})).text
    row = row_of(html, offer.id)
    assert "Ольга Ким" in row
    assert "+7 912 345-67-89" in row  # formatted, not +79123456789
    assert 'href="tel:+79123456789"' in html
    assert "150,000 ₽ · 12 months" in row  # (row_of folds the no-break space)
    assert f"150,000{NBSP}₽ · 12 months" in html
    assert "Source: bankiros" in row
    assert " 7 " in f" {row} "  # the priority column
    assert "5 min" in row  # the lead's age
    assert "answer by" in row  # the lead's first-response deadline
    assert f"lead:{lead.id}" not in row  # no bare reference any more
    assert 'aria-label="Accept Ольга Ким"' in html
    # An offer is not the operator's lead yet (they could not open it): no link until accepted.
    assert f'href="/leads/{lead.id}"' not in html


async def test_an_accepted_lead_links_to_its_page_and_warns_when_the_sla_is_missed(
    client, database, clock
):
    agent, headers = await inbox_operator(database)
    lead = await new_lead(database, customer_name="Пётр Иванов", amount_minor=5_000_000)
    [offer] = await offers(database)
    await accept(database, offer.id, agent.id)
    clock.advance(16 * 60)  # past the default 15-minute first response
    html = (await client.get("/inbox", headers={**headers, **HTML})).text
    items = re.search(r'<ul class="work-list".*?</ul>', html, re.S)
    assert items, "no list of assigned items"
    assert f'<a href="/leads/{lead.id}">Пётр Иванов</a>' in items.group(0)
    assert f"50,000{NBSP}₽" in items.group(0)
    assert 'class="overdue"' in items.group(0)


async def test_the_inbox_speaks_russian_about_leads(client, database, clock):
    _agent, headers = await inbox_operator(database, locale="ru")
    await new_lead(database, customer_name="Анна", amount_minor=15_000_000, term_months=6)
    html = (await client.get("/inbox", headers={**headers, **HTML})).text
    assert f"150{THIN}000{NBSP}₽ · 6 мес." in html
    assert "Источник: website" in html
    assert "меньше минуты" in html  # the lead has just arrived


async def test_references_nobody_describes_are_shown_as_they_are(client, database, clock):
    _agent, headers = await inbox_operator(database)
    missing = f"lead:{uuid.uuid4()}"  # a lead that does not exist (deleted, or a test's)
    await submit(database, reference=missing)
    await submit(database, reference="ticket:42", kind="lead")
    html = (await client.get("/inbox", headers={**headers, **HTML})).text
    assert missing in html
    assert "ticket:42" in html


async def test_describers_are_asked_once_per_prefix_with_every_reference(database):
    calls: list[list[str]] = []

    async def describe_tickets(session, references):
        calls.append(list(references))
        return {ref: routing.ReferenceSummary(title=f"Ticket {ref[7:]}") for ref in references}

    routing.register_reference_describer("ticket", describe_tickets)
    async with database.reader() as session:
        found = await describe_references(
            session, ["ticket:1", "other:1", "ticket:2", "ticket:1", "lead:not-a-uuid"]
        )
    assert calls == [["ticket:1", "ticket:2"]]
    assert {ref: summary.title for ref, summary in found.items()} == {
        "ticket:1": "Ticket 1",
        "ticket:2": "Ticket 2",
    }


async def test_the_inbox_costs_the_same_queries_for_one_lead_or_many(client, database, clock):
    agent, headers = await inbox_operator(database, capacity=20)
    await new_lead(database, amount_minor=1_000_000)
    await client.get("/inbox", headers={**headers, **HTML})  # the token's first use is costlier
    with count_queries(database) as one:
        first = await client.get("/inbox", headers={**headers, **HTML})
    assert first.status_code == 200
    for n in range(7):
        await new_lead(database, amount_minor=1_000_000 + n, term_months=3)
    pending = await offers(database, status="pending")
    for offer in pending[:3]:
        await accept(database, offer.id, agent.id)
    with count_queries(database) as many:
        page = await client.get("/inbox", headers={**headers, **HTML})
    assert page.text.count('<tr data-offer-id="') == 5
    assert page.text.count("<li data-reference=") == 3
    assert many.count == one.count, many.statements
    # agent, offers, items, the leads, the customers' cards, contacts and external ids
    assert many.count <= 7, many.statements
