"""The customers API end to end: permissions, search, manual cards (idempotent), edits, merge,
erase; errors as problem+json naming the field."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import count_queries

from .helpers import audit_of, info, intake, staff

BASE = "/api/v1/customers"
PHONE = "+79123456789"


@pytest.fixture
async def manager(database):
    return await staff(database, "manager")


@pytest.fixture
async def operator(database):
    return await staff(database, "operator")


async def test_who_may_do_what(client, database):
    ref = await intake(database, phone=PHONE)
    other = await intake(database, email="x@example.ru")
    analyst = await staff(database, "analyst")
    operator = await staff(database, "operator")
    manager = await staff(database, "manager")
    client_role = await staff(database, "client")
    admin = await staff(database, "admin")

    assert (await client.get(BASE)).status_code == 401
    assert (await client.get(BASE, headers=client_role)).status_code == 403
    for reader in (analyst, operator, manager):
        assert (await client.get(f"{BASE}/{ref.id}", headers=reader)).status_code == 200
    body = {"name": "Пётр"}
    assert (await client.patch(f"{BASE}/{ref.id}", json=body, headers=analyst)).status_code == 403
    assert (await client.patch(f"{BASE}/{ref.id}", json=body, headers=operator)).status_code == 200
    merge = {"from_id": str(other.id)}
    url = f"{BASE}/{ref.id}/merge"
    assert (await client.post(url, json=merge, headers=operator)).status_code == 403
    assert (await client.post(url, json=merge, headers=manager)).status_code == 200
    erase_url = f"{BASE}/{ref.id}/erase"
    assert (await client.post(erase_url, headers=manager)).status_code == 403
    assert (await client.post(erase_url, headers=admin)).status_code == 200


async def test_create_a_card_by_hand_normalized_and_audited(client, database, operator):
    body = {
        "kind": "company", "name": "ООО «Ромашка»", "phones": ["8 (495) 123-45-67"],
        "emails": ["Info@Romashka.RU"], "external_ids": [{"source": "1c", "external_id": "K-7"}],
        "consent": True,
    }  # fmt: skip
    response = await client.post(BASE, json=body, headers=operator)
    assert response.status_code == 201, response.text
    card = response.json()
    assert (card["kind"], card["name"], card["source"]) == ("company", "ООО «Ромашка»", "manual")
    assert (card["phones"], card["emails"]) == (["+74951234567"], ["info@romashka.ru"])
    assert card["external_ids"] == [{"source": "1c", "external_id": "K-7"}]
    assert (card["consent"], card["consent_source"]) == (True, "manual")
    assert [c["source"] for c in card["contacts"]] == ["manual", "manual"]
    assert [e["kind"] for e in card["timeline"]] == ["customer.created"]
    (entry,) = await audit_of(database, uuid.UUID(card["id"]))
    assert entry.actor_kind == "token"


async def test_creation_honours_the_idempotency_key(client, database, operator):
    headers = {**operator, "Idempotency-Key": "create-1"}
    first = await client.post(BASE, json={"phones": [PHONE]}, headers=headers)
    again = await client.post(BASE, json={"phones": [PHONE]}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    other_body = await client.post(BASE, json={"phones": ["+79990001122"]}, headers=headers)
    assert other_body.status_code == 409


async def test_a_contact_of_another_card_is_a_conflict_naming_field_and_card(client, database,
                                                                             operator):  # fmt: skip
    existing = await intake(database, phone=PHONE)
    body = {"name": "Иван", "phones": ["+79990001122", "8 912 345-67-89"]}
    response = await client.post(BASE, json=body, headers=operator)
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == "urn:allot:problem:conflict"
    assert problem["errors"][0]["field"] == "body.phones.1"
    assert problem["customer_id"] == str(existing.id)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phones": ["123"]}, "body.phones.0"),
        ({"emails": ["ok@example.ru", "nope"]}, "body.emails.1"),
        ({"name": "Иван", "colour": "red"}, "body.colour"),
        ({"kind": "robot", "name": "R2"}, "body.kind"),
        ({}, "body.name"),
        (
            {"external_ids": [{"source": "crm", "external_id": "  "}]},
            "body.external_ids.0.external_id",
        ),
    ],
)
async def test_invalid_bodies_are_422_naming_the_field(client, operator, body, field):
    response = await client.post(BASE, json=body, headers=operator)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_search_by_name_phone_and_email(client, database, operator):
    ivan = await intake(database, name="Иван Петров", phone=PHONE)
    olga = await intake(database, name="Ольга", email="olga.smirnova@example.ru")
    await intake(database, name="Пётр", phone="+79990001122")

    async def found(q):
        response = await client.get(BASE, params={"q": q}, headers=operator)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert await found("иван") == {str(ivan.id)}  # any case, Cyrillic included
    assert await found("ПЕТРОВ") == {str(ivan.id)}
    assert await found("8 (912) 345-67-89") == {str(ivan.id)}  # normalized like the contact
    assert await found("345-67") == {str(ivan.id)}  # a run of digits
    assert await found("8912") == {str(ivan.id)}
    assert await found("OLGA.SMIRNOVA@EXAMPLE.RU") == {str(olga.id)}
    assert await found("smirnova") == {str(olga.id)}
    assert await found("100%_") == set()
    assert len(await found("")) == 3


async def test_the_list_leaves_merged_cards_out_and_pages_with_a_cursor(client, database, manager):
    refs = [await intake(database, phone=f"+7912345670{n}") for n in range(5)]
    await client.post(f"{BASE}/{refs[0].id}/merge", json={"from_id": str(refs[1].id)},
                      headers=manager)  # fmt: skip
    first = (await client.get(BASE, params={"limit": 3}, headers=manager)).json()
    assert [i["id"] for i in first["items"]] == [str(r.id) for r in (refs[4], refs[3], refs[2])]
    second = await client.get(BASE, params={"limit": 3, "cursor": first["next_cursor"]},
                              headers=manager)  # fmt: skip
    assert [i["id"] for i in second.json()["items"]] == [str(refs[0].id)]
    assert second.json()["next_cursor"] is None
    assert (await client.get(BASE, params={"cursor": "junk"}, headers=manager)).status_code == 400


async def test_the_list_costs_the_same_queries_for_5_or_50_cards(client, database, operator):
    async def queries_for_listing() -> int:
        with count_queries(database) as counter:
            response = await client.get(BASE, params={"limit": 100}, headers=operator)
        assert response.status_code == 200
        return counter.count

    for n in range(5):
        await intake(database, phone=f"+7912000000{n}", email=f"a{n}@example.ru")
    await queries_for_listing()  # the token's first use is recorded once: not the list's cost
    few = await queries_for_listing()
    for n in range(45):
        await intake(database, phone=f"+791300000{n:02d}", source="crm", external_id=f"E{n}")
    assert await queries_for_listing() == few
    # The caller (token, user, roles, teams), then cards, their contacts, their external ids.
    assert few <= 7


async def test_the_card_reads_in_the_callers_language(client, database):
    ref = await intake(database, phone=PHONE, source="site")
    russian = await staff(database, "operator", locale="ru")
    english = await staff(database, "operator", locale="en")
    ru = (await client.get(f"{BASE}/{ref.id}", headers=russian)).json()
    en = (await client.get(f"{BASE}/{ref.id}", headers=english)).json()
    assert ru["timeline"][0]["title"] == "Карточка создана (источник: site)"
    assert en["timeline"][0]["title"] == "Card created (source: site)"
    assert (await client.get(f"{BASE}/{uuid.uuid4()}", headers=english)).status_code == 404


async def test_patch_changes_name_consent_and_replaces_contacts(client, database, operator):
    ref = await intake(database, phone=PHONE, email="old@example.ru")
    body = {"name": "Иван", "consent": True, "phones": ["+7 999 000-11-22", "8 912 345 67 89"],
            "emails": []}  # fmt: skip
    response = await client.patch(f"{BASE}/{ref.id}", json=body, headers=operator)
    assert response.status_code == 200, response.text
    card = response.json()
    assert card["name"] == "Иван"
    assert sorted(card["phones"]) == ["+79123456789", "+79990001122"]
    assert (card["emails"], card["consent"]) == ([], True)
    entry = (await audit_of(database, ref.id))[-1]
    assert entry.action == "customers.customer.updated"
    assert set(entry.changed_fields) == {"name", "consent", "phones", "emails"}
    assert entry.before["emails"] == ["old@example.ru"]
    # The freed e-mail may now go to another card.
    assert (await intake(database, email="old@example.ru")).created


async def test_patch_refuses_a_phone_of_another_card_and_edits_of_a_merged_card(
    client, database, manager
):
    a = await intake(database, phone=PHONE)
    b = await intake(database, phone="+79990001122")
    taken = await client.patch(f"{BASE}/{b.id}", json={"phones": [PHONE]}, headers=manager)
    assert taken.status_code == 409
    assert taken.json()["errors"][0]["field"] == "body.phones.0"
    assert (await info(database, b.id)).phones == ("+79990001122",)
    await client.post(f"{BASE}/{a.id}/merge", json={"from_id": str(b.id)}, headers=manager)
    merged = await client.patch(f"{BASE}/{b.id}", json={"name": "x"}, headers=manager)
    assert merged.status_code == 409
    assert merged.json()["merged_into_id"] == str(a.id)


async def test_merge_and_erase_through_the_api(client, database, manager):
    a = await intake(database, phone=PHONE, name="Иван")
    b = await intake(database, email="ivan@example.ru")
    response = await client.post(f"{BASE}/{a.id}/merge", json={"from_id": str(b.id)},
                                 headers=manager)  # fmt: skip
    assert response.status_code == 200
    assert response.json()["emails"] == ["ivan@example.ru"]
    assert response.json()["timeline"][0]["kind"] == "customer.merged"
    again = await client.post(f"{BASE}/{a.id}/merge", json={"from_id": str(b.id)},
                              headers=manager)  # fmt: skip
    assert again.status_code == 409
    itself = await client.post(f"{BASE}/{a.id}/merge", json={"from_id": str(a.id)},
                               headers=manager)  # fmt: skip
    assert itself.json()["errors"][0]["field"] == "body.from_id"

    admin = await staff(database, "admin")
    erased = await client.post(f"{BASE}/{a.id}/erase", headers=admin)
    assert erased.status_code == 200
    card = erased.json()
    assert (card["name"], card["phones"], card["emails"]) == (None, [], [])
    assert card["erased_at"] is not None
    assert all(c["value"].startswith("erased:") for c in card["contacts"])
