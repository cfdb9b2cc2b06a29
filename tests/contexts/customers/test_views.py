"""The customer pages: the search list (whole page, or only results for htmx), the card with its
contacts, consent, source and timeline, and the merge and erase forms."""

from __future__ import annotations

import uuid

from allot.contexts import customers

from .helpers import info, intake, staff

HTMX = {"HX-Request": "true"}
PHONE = "+79123456789"


async def test_the_list_page_searches_with_htmx(client, database):
    operator = await staff(database, "operator")
    ivan = await intake(database, name="Иван Петров", phone=PHONE)
    await intake(database, name="Ольга", email="olga@example.ru")
    page = await client.get("/customers", headers=operator)
    assert page.status_code == 200
    assert 'hx-get="/customers"' in page.text
    assert 'name="q"' in page.text
    assert "Иван Петров" in page.text
    assert "Ольга" in page.text
    assert f'href="/customers/{ivan.id}"' in page.text
    assert 'href="/customers"' in page.text  # the navigation entry

    results = await client.get("/customers", params={"q": "8 912 345 67 89"},
                               headers={**operator, **HTMX})  # fmt: skip
    assert results.text.lstrip().startswith('<section id="customer-results"')
    assert "<form" not in results.text
    assert "Иван Петров" in results.text
    assert "Ольга" not in results.text
    nothing = await client.get("/customers", params={"q": "nobody"}, headers=operator)
    assert "No customers match." in nothing.text


async def test_the_pages_speak_russian_to_a_russian_user(client, database):
    russian = await staff(database, "operator", locale="ru")
    ref = await intake(database, phone=PHONE, source="site")
    assert "Клиенты" in (await client.get("/customers", headers=russian)).text
    card = (await client.get(f"/customers/{ref.id}", headers=russian)).text
    assert "Карточка создана (источник: site)" in card
    assert "Ещё не спрашивали" in card


async def test_the_card_shows_contacts_consent_source_and_the_timeline_newest_first(
    client, database, clock
):
    manager = await staff(database, "manager")
    ref = await intake(database, name="Иван", phone=PHONE, email="ivan@example.ru",
                       source="site", consent=True)  # fmt: skip
    lead_id = uuid.uuid4()
    clock.advance(60)
    async with database.transaction() as session:
        await customers.add_timeline_entry(
            session, ref.id, kind="lead.created", title="New lead from %(source)s",
            reference=f"lead:{lead_id}", data={"source": "site"},
        )  # fmt: skip
    html = (await client.get(f"/customers/{ref.id}", headers=manager)).text
    assert "<h1>Иван" in html
    assert f'href="tel:{PHONE}"' in html
    assert "ivan@example.ru" in html
    assert "Given" in html
    assert html.index("New lead from site") < html.index("Card created (source: site)")
    assert f'href="/leads/{lead_id}"' in html
    assert f'action="/customers/{ref.id}/merge"' in html
    assert "/erase" not in html  # only admins erase


async def test_operators_see_no_merge_form_and_others_no_page(client, database):
    ref = await intake(database, phone=PHONE)
    operator = await staff(database, "operator")
    html = (await client.get(f"/customers/{ref.id}", headers=operator)).text
    assert "/merge" not in html
    outsider = await staff(database, "client")
    assert (await client.get(f"/customers/{ref.id}", headers=outsider)).status_code == 403
    assert (await client.get(f"/customers/{uuid.uuid4()}", headers=operator)).status_code == 404


async def test_merging_from_the_card_page(client, database):
    manager = await staff(database, "manager")
    survivor = await intake(database, phone=PHONE)
    duplicate = await intake(database, email="ivan@example.ru")
    link = f"http://allot.local/customers/{duplicate.id}"  # a pasted link works as well as an id
    response = await client.post(f"/customers/{survivor.id}/merge", data={"from_id": link},
                                 headers=manager)  # fmt: skip
    assert response.status_code == 303
    assert response.headers["location"] == f"/customers/{survivor.id}"
    assert (await info(database, duplicate.id)).merged_into_id == survivor.id
    merged_page = (await client.get(f"/customers/{duplicate.id}", headers=manager)).text
    assert "This card was merged into another one." in merged_page
    assert f'href="/customers/{survivor.id}"' in merged_page
    assert "/merge" not in merged_page


async def test_a_failed_merge_shows_why_next_to_the_form_and_changes_nothing(client, database):
    manager = await staff(database, "manager")
    card = await intake(database, phone=PHONE)
    other = await intake(database, email="ivan@example.ru")
    cases = [
        ("not an id", 422, "Enter the other card&#39;s id or paste a link to it"),
        (str(card.id), 422, "A card cannot be merged into itself"),
        (str(uuid.uuid4()), 422, "There is no customer with this id"),
    ]
    for value, status, message in cases:
        response = await client.post(f"/customers/{card.id}/merge", data={"from_id": value},
                                     headers=manager)  # fmt: skip
        assert response.status_code == status
        assert message in response.text
        assert 'aria-invalid="true"' in response.text
    await database.run(lambda s: customers.merge(s, other.id, card.id))
    late = await client.post(f"/customers/{other.id}/merge", data={"from_id": str(card.id)},
                             headers=manager)  # fmt: skip
    assert late.status_code == 409
    assert "already" in late.text
    assert (await info(database, other.id)).phones == (PHONE,)


async def test_an_admin_erases_from_the_card_page(client, database):
    admin = await staff(database, "admin")
    ref = await intake(database, name="Иван", phone=PHONE)
    html = (await client.get(f"/customers/{ref.id}", headers=admin)).text
    assert f'action="/customers/{ref.id}/erase"' in html
    unconfirmed = await client.post(f"/customers/{ref.id}/erase", headers=admin)
    assert unconfirmed.status_code == 422
    assert "Tick the box to confirm the erasure" in unconfirmed.text
    assert (await info(database, ref.id)).name == "Иван"
    response = await client.post(f"/customers/{ref.id}/erase", data={"confirm": "yes"},
                                 headers=admin)  # fmt: skip
    assert response.status_code == 303
    page = (await client.get(f"/customers/{ref.id}", headers=admin)).text
    assert "Erased customer" in page
    assert "Иван" not in page
    assert PHONE not in page
    assert "/erase" not in page
    manager = await staff(database, "manager")
    other = await intake(database, phone="+79990001122")
    refused = await client.post(f"/customers/{other.id}/erase", headers=manager)
    assert refused.status_code == 403
