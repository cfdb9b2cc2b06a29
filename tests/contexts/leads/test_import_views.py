"""The import page, its live progress fragment and the lead-imports API."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from allot.contexts.leads.import_views import wait_for

from .helpers import caller, lead_desk

HTML = {"Accept": "text/html"}
HTMX = {"HX-Request": "true"}
CONTENT = (
    "ФИО;Телефон;Сумма, руб.\n"
    "Иван Петров;8 912 345-67-89;150 000\n"
    ";8 912 345-67-80;\n"
    "Ольга;8 912 345-67-81;сто\n"
).encode("cp1251")


@pytest.fixture
async def manager(database: Any) -> dict[str, str]:
    return await caller(database, "manager", locale="en")


async def test_upload_runs_in_the_background_and_the_page_shows_progress_and_rejects(
    client: Any, database: Any, clock: Any, manager: dict[str, str]
) -> None:
    await lead_desk(database)
    listing = await client.get("/leads", headers={**manager, **HTML})
    assert 'href="/leads/import"' in listing.text
    form = await client.get("/leads/import", headers={**manager, **HTML})
    assert form.status_code == 200
    assert 'enctype="multipart/form-data"' in form.text

    posted = await client.post(
        "/leads/import",
        data={"source": "excel"},
        files={"file": ("заявки.csv", CONTENT, "text/csv")},
        headers={**manager, **HTML},
    )
    assert posted.status_code == 303
    location = posted.headers["location"]
    import_id = uuid.UUID(location.rsplit("/", 1)[1])
    await wait_for(import_id)

    page = await client.get(location, headers={**manager, **HTML})
    assert page.status_code == 200
    assert "Imported: 1. Rejected: 2." in page.text
    assert re.search(r"<td>3</td>\s*<td>ФИО</td>\s*<td>Required", page.text)
    assert re.search(r"<td>4</td>\s*<td>Сумма, руб.</td>", page.text)
    assert 'href="/leads?source=excel"' in page.text
    fragment = await client.get(f"{location}?part=progress", headers={**manager, **HTMX})
    assert fragment.text.lstrip().startswith('<section id="import-progress"')
    assert "hx-trigger" not in fragment.text  # done: no more polling


async def test_the_form_refuses_a_missing_file_and_a_bad_source(
    client: Any, database: Any, manager: dict[str, str]
) -> None:
    posted = await client.post(
        "/leads/import", data={"source": "Not A Source!"}, headers={**manager, **HTML}
    )
    assert posted.status_code == 422
    assert "Choose a CSV file" in posted.text
    assert "Lower-case letters" in posted.text


async def test_imports_show_to_their_owner_and_managers_only(
    client: Any, database: Any, clock: Any, manager: dict[str, str]
) -> None:
    started = await client.post(
        "/api/v1/lead-imports",
        files={"file": ("leads.csv", CONTENT, "text/csv")},
        data={"source": "api"},
        headers=manager,
    )
    assert started.status_code == 202
    import_id = started.json()["id"]
    await wait_for(uuid.UUID(import_id))

    report = await client.get(started.json()["url"], headers=manager)
    body = report.json()
    assert (body["status"], body["total_rows"], body["imported_rows"]) == ("done", 3, 1)
    assert [(r["line"], r["field"], r["reason"]) for r in body["rejects"]] == [
        (3, "ФИО", "Required"),
        (4, "Сумма, руб.", "Enter an amount in roubles, e.g. 150000 or 150000,50"),
    ]
    operator = await caller(database, "operator", locale="en")
    assert (
        await client.get(f"/api/v1/lead-imports/{import_id}", headers=operator)
    ).status_code == 404
    assert (
        await client.get(f"/leads/import/{import_id}", headers={**operator, **HTML})
    ).status_code == 404
    analyst = await caller(database, "analyst", locale="en")
    assert (await client.get("/leads/import", headers={**analyst, **HTML})).status_code == 403
    refused = await client.post(
        "/api/v1/lead-imports", files={"file": ("x.csv", b"name\n", "text/csv")},
        data={"source": "BAD SOURCE"}, headers=manager,
    )  # fmt: skip
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "body.source"


async def test_a_file_bigger_than_an_api_body_is_taken_by_the_upload_endpoints_only(
    client: Any, database: Any, app: Any, manager: dict[str, str]
) -> None:
    await lead_desk(database)
    limit = app.state.settings.max_request_body_bytes
    rows = "".join(f"Клиент {n};+7912{n:07d}\n" for n in range(limit // 20 + 10))
    big = ("ФИО;Телефон\n" + rows).encode()
    assert limit < len(big) < app.state.settings.max_upload_bytes
    started = await client.post(
        "/api/v1/lead-imports", files={"file": ("big.csv", big, "text/csv")}, headers=manager
    )
    assert started.status_code == 202
    await wait_for(uuid.UUID(started.json()["id"]))
    elsewhere = await client.post(
        "/api/v1/leads",
        content=big,
        headers={**manager, "Content-Type": "application/json"},
    )
    assert elsewhere.status_code == 413
