"""Clearing a lead's optional details: PATCH semantics in the API (left out = kept, null =
cleared) and an emptied input in the lead page's form."""

from __future__ import annotations

import pytest

from .helpers import caller, lead_desk, new_lead, stored

HTML = {"Accept": "text/html"}


@pytest.fixture
async def manager(database):
    return await caller(database, "manager", locale="en")


async def a_lead(database):
    await lead_desk(database)
    return await new_lead(database, amount_minor=15_000_000, term_months=12)


async def patch(client, headers, lead_id, body):
    response = await client.patch(f"/api/v1/leads/{lead_id}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_api_null_clears_the_term_and_a_left_out_amount_is_kept(
    client, database, clock, manager
):
    lead = await a_lead(database)
    body = await patch(client, manager, lead.id, {"product": {"term_months": None}})
    assert body["product"]["term_months"] is None
    assert body["product"]["amount_minor"] == 15_000_000
    saved = await stored(database, lead.id)
    assert (saved.amount_minor, saved.currency, saved.term_months) == (15_000_000, "RUB", None)


async def test_api_null_product_clears_amount_and_term(client, database, clock, manager):
    lead = await a_lead(database)
    await patch(client, manager, lead.id, {"product": None})
    saved = await stored(database, lead.id)
    assert (saved.amount_minor, saved.currency, saved.term_months) == (None, None, None)


async def test_api_without_product_keeps_it(client, database, clock, manager):
    lead = await a_lead(database)
    await patch(client, manager, lead.id, {"attributes": {"region": "msk"}})
    await patch(client, manager, lead.id, {})
    saved = await stored(database, lead.id)
    assert (saved.amount_minor, saved.term_months) == (15_000_000, 12)
    assert saved.attributes == {"region": "msk"}
    await patch(client, manager, lead.id, {"attributes": None})  # null: no attributes at all
    assert (await stored(database, lead.id)).attributes == {}


async def test_the_lead_page_shows_the_details_form_with_the_current_values(
    client, database, clock, manager
):
    lead = await a_lead(database)
    html = (await client.get(f"/leads/{lead.id}", headers={**manager, **HTML})).text
    assert f'action="/leads/{lead.id}/details"' in html
    assert 'name="amount" type="text" value="150000"' in html
    assert 'name="term" type="number" value="12"' in html


async def test_an_emptied_term_input_clears_the_term(client, database, clock, manager):
    lead = await a_lead(database)
    response = await client.post(
        f"/leads/{lead.id}/details", data={"amount": "150 000", "term": ""},
        headers={**manager, **HTML},
    )  # fmt: skip
    assert response.status_code == 303
    saved = await stored(database, lead.id)
    assert (saved.amount_minor, saved.term_months) == (15_000_000, None)


async def test_an_emptied_amount_clears_it_and_an_input_not_sent_is_kept(
    client, database, clock, manager
):
    lead = await a_lead(database)
    response = await client.post(
        f"/leads/{lead.id}/details", data={"amount": ""}, headers={**manager, **HTML}
    )
    assert response.status_code == 303
    saved = await stored(database, lead.id)
    assert (saved.amount_minor, saved.currency, saved.term_months) == (None, None, 12)


async def test_a_wrong_value_is_shown_next_to_its_input_and_nothing_changes(
    client, database, clock, manager
):
    lead = await a_lead(database)
    response = await client.post(
        f"/leads/{lead.id}/details", data={"amount": "", "term": "9999"},
        headers={**manager, **HTML},
    )  # fmt: skip
    assert response.status_code == 422
    assert 'id="f-term-error"' in response.text
    assert 'value="9999"' in response.text  # what was typed stays
    assert '<details id="lead-edit-details" open>' in response.text
    saved = await stored(database, lead.id)
    assert (saved.amount_minor, saved.term_months) == (15_000_000, 12)


async def test_analysts_cannot_change_details(client, database, clock):
    lead = await a_lead(database)
    analyst = await caller(database, "analyst")
    response = await client.post(
        f"/leads/{lead.id}/details", data={"term": ""}, headers={**analyst, **HTML}
    )
    assert response.status_code == 403
    assert (await stored(database, lead.id)).term_months == 12
