"""Clearing a card's name and contacts: the API's PATCH (left out = kept, null = cleared, null
refused for kind and consent) and the card page's edit form (an emptied input clears)."""

from __future__ import annotations

from .helpers import info, intake, staff

BASE = "/api/v1/customers"
HTML = {"Accept": "text/html"}
PHONE = "+79123456789"


async def a_card(database):
    return await intake(database, name="Иван Петров", phone=PHONE, email="ivan@example.ru")


async def test_api_null_clears_the_emails_and_keeps_what_was_left_out(client, database):
    operator = await staff(database, "operator")
    card = await a_card(database)
    response = await client.patch(f"{BASE}/{card.id}", json={"emails": None}, headers=operator)
    assert response.status_code == 200, response.text
    saved = await info(database, card.id)
    assert saved.emails == ()
    assert (saved.name, saved.phones) == ("Иван Петров", (PHONE,))


async def test_api_null_clears_the_name(client, database):
    operator = await staff(database, "operator")
    card = await a_card(database)
    response = await client.patch(f"{BASE}/{card.id}", json={"name": None}, headers=operator)
    assert response.status_code == 200, response.text
    saved = await info(database, card.id)
    assert (saved.name, saved.phones, saved.emails) == (None, (PHONE,), ("ivan@example.ru",))


async def test_api_refuses_null_kind_and_consent(client, database):
    operator = await staff(database, "operator")
    card = await a_card(database)
    for field in ("kind", "consent"):
        response = await client.patch(f"{BASE}/{card.id}", json={field: None}, headers=operator)
        assert response.status_code == 422, field
        assert response.json()["errors"][0]["field"] == f"body.{field}"


async def test_the_card_page_has_an_edit_form_with_the_current_values(client, database):
    operator = await staff(database, "operator")
    card = await a_card(database)
    html = (await client.get(f"/customers/{card.id}", headers={**operator, **HTML})).text
    assert f'action="/customers/{card.id}/edit"' in html
    assert 'name="name" type="text" value="Иван Петров"' in html
    assert f">{PHONE}</textarea>" in html
    assert "+7 912 345-67-89" in html  # the contacts table shows the phone formatted
    analyst = await staff(database, "analyst")
    html = (await client.get(f"/customers/{card.id}", headers={**analyst, **HTML})).text
    assert "/edit" not in html  # analysts read cards, they do not edit them


async def test_an_emptied_emails_input_removes_every_email(client, database):
    operator = await staff(database, "operator")
    card = await a_card(database)
    response = await client.post(
        f"/customers/{card.id}/edit",
        data={"name": "Иван Петров", "phones": f"{PHONE}\n+7 913 000-00-01", "emails": ""},
        headers={**operator, **HTML},
    )
    assert response.status_code == 303
    saved = await info(database, card.id)
    assert saved.emails == ()
    assert sorted(saved.phones) == [PHONE, "+79130000001"]


async def test_inputs_the_form_did_not_send_are_kept_and_an_empty_name_clears(client, database):
    operator = await staff(database, "operator")
    card = await a_card(database)
    response = await client.post(
        f"/customers/{card.id}/edit", data={"name": ""}, headers={**operator, **HTML}
    )
    assert response.status_code == 303
    saved = await info(database, card.id)
    assert (saved.name, saved.phones, saved.emails) == (None, (PHONE,), ("ivan@example.ru",))


async def test_a_bad_phone_is_shown_next_to_its_input_and_nothing_changes(client, database):
    operator = await staff(database, "operator", locale="ru")
    card = await a_card(database)
    response = await client.post(
        f"/customers/{card.id}/edit",
        data={"name": "Иван", "phones": "12", "emails": ""},
        headers={**operator, **HTML},
    )
    assert response.status_code == 422
    assert 'id="f-phones-error"' in response.text
    assert "Неверный номер телефона" in response.text
    assert ">12</textarea>" in response.text  # what was typed stays
    saved = await info(database, card.id)
    assert (saved.name, saved.emails) == ("Иван Петров", ("ivan@example.ru",))


async def test_a_contact_of_another_card_is_refused_by_name(client, database):
    operator = await staff(database, "operator")
    card = await a_card(database)
    await intake(database, name="Ольга", phone="+79990001122")
    response = await client.post(
        f"/customers/{card.id}/edit",
        data={"phones": "+79990001122"},
        headers={**operator, **HTML},
    )
    assert response.status_code == 409
    assert "Belongs to another customer" in response.text
    assert (await info(database, card.id)).phones == (PHONE,)
