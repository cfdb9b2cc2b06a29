"""The /audit pages: filtering (whole page, or just the results for htmx), paging, the diff."""

from __future__ import annotations

import re

import pytest

from allot.contexts import audit
from allot.contexts.audit import AuditEntryIn
from allot.kernel.context import bound

from .factories import bearer_headers, user_actor

HTMX = {"HX-Request": "true"}


@pytest.fixture
async def manager(database):
    return await bearer_headers(database, roles=["manager"], email="manager@example.ru")


async def write(database, *entries, actor_label="editor@example.ru"):
    with bound(actor=user_actor(actor_label)):
        async with database.transaction() as session:
            return [await audit.record(session, **entry) for entry in entries]


def thing(object_id="T-1", **overrides):
    return {"action": "test.thing.updated", "object_type": "test.thing", "object_id": object_id,
            "before": {"stage": "new"}, "after": {"stage": "won"}, **overrides}  # fmt: skip


async def test_the_page_lists_entries_with_a_filter_form_driven_by_htmx(client, database, manager):
    await write(database, thing())
    response = await client.get("/audit", headers=manager)
    assert response.status_code == 200
    html = response.text
    assert '<form method="get" action="/audit"' in html
    assert 'hx-get="/audit"' in html
    assert 'hx-target="#audit-results"' in html
    for name in ("object_type", "object_id", "user", "action", "from", "to"):
        assert f'name="{name}"' in html
    assert "test.thing.updated" in html
    assert "editor@example.ru" in html


async def test_an_htmx_search_returns_only_the_results(client, database, manager):
    await write(database, thing("T-1"), thing("T-2", action="test.thing.closed"))
    params = {"action": "test.thing.closed"}
    response = await client.get("/audit", params=params, headers={**manager, **HTMX})
    assert response.status_code == 200
    html = response.text
    assert html.lstrip().startswith('<section id="audit-results"')
    assert "<form" not in html
    assert "test.thing.closed" in html
    assert "test.thing.updated" not in html


async def test_filter_by_user_email_and_object(client, database, manager):
    await write(database, thing("T-1"), actor_label="olga@example.ru")
    await write(database, thing("T-2"), actor_label="ivan@example.ru")
    html = (await client.get("/audit", params={"user": "olga@example.ru"}, headers=manager)).text
    assert "T-1" in html
    assert "T-2" not in html
    params = {"object_type": "test.thing", "object_id": "T-2"}
    html = (await client.get("/audit", params=params, headers={**manager, **HTMX})).text
    assert "ivan@example.ru" in html
    assert "olga@example.ru" not in html


async def test_times_are_filtered_and_shown_in_the_business_time_zone(client, database, clock):
    russian = await bearer_headers(database, roles=["analyst"], email="ru@example.ru", locale="ru")
    await write(database, thing("T-early"))  # 09:00 UTC = 12:00 Moscow
    clock.advance(2 * 3600)
    await write(database, thing("T-late"))  # 14:00 Moscow
    params = {"from": "2026-01-05T13:00", "to": "2026-01-05T15:00"}
    html = (await client.get("/audit", params=params, headers={**russian, **HTMX})).text
    assert "T-late" in html
    assert "T-early" not in html
    assert "05.01.2026, 14:00" in html


@pytest.mark.parametrize("typed", ["5th of Jan", "0001-01-01T00:00"])
async def test_a_mistyped_date_is_explained_not_an_error_page(client, manager, typed):
    response = await client.get("/audit", params={"from": typed}, headers=manager)
    assert response.status_code == 200
    assert 'aria-invalid="true"' in response.text
    assert "Enter a date and time" in response.text


async def test_the_next_page_link_keeps_the_filters(client, database, manager):
    entries = [
        AuditEntryIn(action="test.thing.updated", object_type="test.thing", object_id=f"T-{n}")
        for n in range(55)
    ]
    async with database.transaction() as session:
        await audit.record_many(session, entries)
    first = await client.get("/audit", params={"object_type": "test.thing"}, headers=manager)
    match = re.search(r'hx-get="(/audit\?[^"]*cursor=[^"]+)"', first.text)
    assert match, "no next-page link"
    next_url = match.group(1).replace("&amp;", "&")
    assert "object_type=test.thing" in next_url
    second = await client.get(next_url, headers={**manager, **HTMX})
    assert second.text.count("/audit/entries/") == 5
    assert 'rel="next"' not in second.text


async def test_the_entry_page_shows_each_changed_field_before_and_after(
    client, database, clock, manager
):
    changed = thing(
        before={"stage": "new", "owner": "A"}, after={"stage": "won", "owner": "A"},
        summary="Lead won",
    )  # fmt: skip
    (entry_id,) = await write(database, changed)
    response = await client.get(f"/audit/entries/{entry_id}", headers=manager)
    assert response.status_code == 200
    html = response.text
    assert re.search(r"stage.*?<del>new</del>.*?<ins>won</ins>", html, re.S)
    assert "owner" not in html  # unchanged fields are not part of the diff
    assert "Lead won" in html
    assert "12:00\u202fPM" in html or "12:00 PM" in html  # 09:00 UTC in Moscow, in English


async def test_pages_need_audit_read(client, database):
    operator = await bearer_headers(database, roles=["operator"], email="op@example.ru")
    assert (await client.get("/audit", headers=operator)).status_code == 403


async def test_a_russian_reader_gets_the_page_in_russian(client, database):
    reader = await bearer_headers(database, roles=["analyst"], email="ru@example.ru", locale="ru")
    response = await client.get("/audit", params={"from": "5th of Jan"}, headers=reader)
    assert "Журнал аудита" in response.text
    assert "Введите дату и время" in response.text
