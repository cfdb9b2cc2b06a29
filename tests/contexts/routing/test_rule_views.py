"""The rule editor as a manager uses it in a browser: a bad definition is refused with its place
and position and the text kept; versions are saved, listed and activated; the dry run tries the
editor's current text; the "why" page explains a real decision. On both databases."""

from __future__ import annotations

import html
import json
import re
import uuid
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allot.contexts.routing import agent_service, rule_service
from allot.contexts.routing.models import Decision, WorkItem
from allot.contexts.routing.rule_schemas import RuleSetCreate
from allot.contexts.routing.rule_texts import RuleTextInvalid, parse_json_object
from allot.contexts.routing.schemas import LeaveCreate
from allot.kernel.clock import utcnow
from allot.kernel.i18n import using_locale
from tests.conftest import count_queries
from tests.factories import csrf_token

from .helpers import count, make_agent, make_queue, submit
from .test_views import cheap_password_hashing, signed_in  # noqa: F401 - the fixture applies here too

HTML = {"Accept": "text/html", "Accept-Language": "en"}
HTMX = {**HTML, "HX-Request": "true"}

BIG_LOANS = {
    "filters": [
        {"name": "site", "when": 'source == "site"', "queue": "General"},
        {
            "name": "big",
            "when": "amount_minor >= 1000",
            "queue": "Senior",
            "steps": [
                {"after_seconds": 60, "notify": ["manager"]},
                {"after_seconds": 300, "queue": "General"},
            ],
            "ttl_seconds": 86400,
        },
    ]
}


async def post_form(client, path: str, data: dict, *, headers=HTML, page="/routing/rules/new"):
    token = await csrf_token(client, page)
    return await client.post(path, data={**data, "csrf_token": token}, headers=headers)


def text_of(response) -> str:
    """The page's text with entities decoded and tags dropped (inline ones without a space),
    whitespace collapsed."""
    inline = re.sub(r"</?(code|strong|span|small|mark|a)\b[^>]*>", "", response.text)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def textarea(response, name: str) -> str:
    found = re.search(
        rf'<textarea id="f-{name}" name="{name}"[^>]*>(.*?)</textarea>', response.text, re.S
    )
    assert found, f"no textarea {name}"
    return html.unescape(found.group(1))


async def two_queues(database) -> None:
    await make_queue(database, name="General", member_expression='"loans" in skills')
    await make_queue(database, name="Senior", member_expression='"senior" in skills')


async def versions(database) -> list[tuple[int, str]]:
    async with database.reader() as session:
        return [(r.version, r.status) for r in await rule_service.list_rule_sets(session)]


# -- the editor's text ---------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    value=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    notes=st.lists(st.tuples(st.integers(0, 50), st.text(max_size=10)), max_size=5),
    broken=st.booleans(),
)
def test_notes_never_change_the_rules_nor_the_line_numbers_of_errors(value, notes, broken):
    """Note lines (//) may go anywhere between lines: the value read is the same, and a JSON
    error names the line the manager sees in the editor."""
    lines = json.dumps(value, indent=2, ensure_ascii=False).split("\n")
    for position, note in notes:
        lines.insert(min(position, len(lines)), "  // " + note.replace("\n", " "))
    if not broken:
        assert parse_json_object("\n".join(lines), "definition") == value
        return
    lines.append("oops")
    with using_locale("en"), pytest.raises(RuleTextInvalid) as failure:
        parse_json_object("\n".join(lines), "definition")
    [error] = failure.value.errors
    assert f"line {len(lines)}," in error.message
    assert error.excerpt == "oops"


# -- who may open what --------------------------------------------------------------------------
async def test_operators_cannot_open_or_use_the_rule_pages(client, database):
    await signed_in(client, database, "operator")
    for path in ("/routing/rules", "/routing/rules/new", f"/routing/items/{uuid.uuid4()}/why"):
        assert (await client.get(path, headers=HTML)).status_code == 403, path
    token = await csrf_token(client, "/account")
    data = {"csrf_token": token, "name": "x", "definition": "{}"}
    assert (await client.post("/routing/rules", data=data, headers=HTML)).status_code == 403
    dry = await client.post("/routing/rules/dry-run", data=data, headers=HTMX)
    assert dry.status_code == 403
    assert await versions(database) == []


async def test_analysts_read_the_versions_but_cannot_edit(client, database):
    await make_queue(database, name="General")
    async with database.transaction() as session:
        saved = await rule_service.create_rule_set(
            session, RuleSetCreate(name="v1", definition={"filters": []})
        )
    await signed_in(client, database, "analyst")
    page = await client.get("/routing/rules", headers=HTML)
    assert page.status_code == 200
    assert "v1" in page.text
    assert "/routing/rules/new" not in page.text
    assert (await client.get(f"/routing/rules/{saved.id}", headers=HTML)).status_code == 200
    assert (await client.get("/routing/rules/new", headers=HTML)).status_code == 403


async def test_signed_out_browsers_are_sent_to_sign_in(client, database):
    response = await client.get("/routing/rules", headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


async def test_managers_find_the_rules_in_the_navigation(client, database):
    await signed_in(client, database, "manager")
    page = await client.get("/routing/queues", headers=HTML)
    assert '<a href="/routing/rules">Routing rules</a>' in page.text


async def test_the_pages_cost_the_same_queries_for_more_versions_and_leads(client, database):
    await signed_in(client, database, "manager")
    await two_queues(database)

    async def queries(path: str) -> int:
        with count_queries(database) as counter:
            response = await client.get(path, headers=HTML)
        assert response.status_code == 200
        return counter.count

    few = (await queries("/routing/rules"), await queries("/routing/rules/new"))
    for n in range(5):
        async with database.transaction() as session:
            await rule_service.create_rule_set(
                session, RuleSetCreate(name=f"v{n}", definition={"filters": []})
            )
        await submit(database, reference=f"lead:{uuid.uuid4()}")
    assert (await queries("/routing/rules"), await queries("/routing/rules/new")) == few


# -- saving -------------------------------------------------------------------------------------
async def test_a_bad_definition_shows_where_and_keeps_the_text(client, database):
    await signed_in(client, database, "manager")
    await make_queue(database, name="Loans")
    typed = (
        "// my notes\n"
        '{"filters": [\n'
        '  {"name": "ok", "when": "source == \\"site\\"", "queue": "Loans"},\n'
        '  {"name": "broken", "when": "amount_minor >= = 5", "queue": "Loans"},\n'
        '  {"name": "nowhere", "queue": "Mars"}\n'
        "]}\n"
    )
    response = await post_form(
        client, "/routing/rules", {"name": "Try 1", "definition": typed, "action": "draft"}
    )
    assert response.status_code == 422
    page = text_of(response)
    assert "filters.1.when: Syntax error at position 17 near '= 5'" in page
    assert "filters.2.queue: No active queue named 'Mars'" in page
    # the expression is shown with the spot marked under position 17
    assert "amount_minor >= = 5\n                ^" in html.unescape(response.text)
    assert textarea(response, "definition") == typed  # exactly as typed, notes included
    assert 'value="Try 1"' in response.text
    assert await versions(database) == []


async def test_broken_json_and_wrong_fields_are_named(client, database):
    await signed_in(client, database, "manager")
    await make_queue(database, name="Loans")
    missing_comma = '{"filters": [\n  {"name": "a" "queue": "Loans"}\n]}'
    response = await post_form(
        client, "/routing/rules", {"name": "x", "definition": missing_comma, "action": "draft"}
    )
    assert response.status_code == 422
    assert "Not valid JSON: line 2, column 16: a comma is missing" in text_of(response)
    wrong = {
        "filters": [
            {"name": "a", "queue": "Loans", "steps": [{"after_seconds": 60}]},
            {"name": "b", "queue": "Loans", "when_nobody_available": "panic", "colour": 1},
        ]
    }
    response = await post_form(
        client, "/routing/rules", {"name": "", "definition": json.dumps(wrong), "action": "draft"}
    )
    assert response.status_code == 422
    page = text_of(response)
    assert (
        "filters.0.steps.0: A step must move the item, change its priority or notify someone"
        in page
    )
    assert "filters.1.when_nobody_available: Choose one of:" in page
    assert "filters.1.colour: Unknown field." in page
    assert 'id="f-name-error"' in response.text  # the empty name, at its input
    assert await versions(database) == []


async def test_versions_are_saved_listed_and_activated(client, database):
    await signed_in(client, database, "manager")
    await two_queues(database)
    definition = json.dumps(BIG_LOANS, indent=2)
    draft = await post_form(
        client,
        "/routing/rules",
        {"name": "Big loans", "comment": "first try", "definition": definition, "action": "draft"},
    )
    assert draft.status_code == 303
    assert draft.headers["location"] == "/routing/rules"
    listing = await client.get("/routing/rules", headers=HTML)
    assert "Version 1 is saved as a draft." in listing.text
    assert re.search(r'<tr data-version="1" data-status="draft">', listing.text)
    assert "No rules are active" in listing.text

    # "Save and activate" a second version; then activate the first again.
    active = await post_form(
        client, "/routing/rules", {"name": "v2", "definition": definition, "action": "activate"}
    )
    assert active.status_code == 303
    assert await versions(database) == [(2, "active"), (1, "draft")]
    async with database.reader() as session:
        first = next(r for r in await rule_service.list_rule_sets(session) if r.version == 1)
    again = await post_form(
        client, f"/routing/rules/{first.id}/activate", {}, page="/routing/rules"
    )
    assert again.status_code == 303
    assert await versions(database) == [(2, "retired"), (1, "active")]
    listing = await client.get("/routing/rules", headers=HTML)
    assert "Version 1 is active: new items are routed by it." in listing.text
    assert re.search(r'<tr data-version="2" data-status="retired">', listing.text)
    assert "New items are routed by version 1" in text_of(listing)

    # The version in plain words, and "edit as new version" starts from its JSON.
    view = text_of(await client.get(f"/routing/rules/{first.id}", headers=HTML))
    assert 'When source == "site" → queue «General»' in view
    assert "after 1 min: notify the manager" in view
    assert "after 5 min: move to the queue «General»" in view
    assert "Not taken within 1 day: the item expires." in view
    editor = await client.get(f"/routing/rules/new?from={first.id}", headers=HTML)
    assert json.loads(textarea(editor, "definition"))["filters"][1]["name"] == "big"
    assert 'value="Big loans"' in editor.text


async def test_the_example_a_new_editor_starts_from_saves_as_it_is(client, database):
    await signed_in(client, database, "manager")
    await two_queues(database)
    editor = await client.get("/routing/rules/new", headers=HTML)
    assert editor.status_code == 200
    example = textarea(editor, "definition")
    assert example.startswith("// ")
    assert "<code>General</code>" in editor.text
    assert "<code>amount_minor</code>" in editor.text
    saved = await post_form(
        client, "/routing/rules", {"name": "Example", "definition": example, "action": "draft"}
    )
    assert saved.status_code == 303, text_of(saved)
    async with database.reader() as session:
        [rule_set] = await rule_service.list_rule_sets(session)
    steps = rule_set.definition["filters"][0]["steps"]
    assert [s["after_seconds"] for s in steps] == [60, 300]
    assert rule_set.definition["filters"][0]["ttl_seconds"] == 86400


# -- the dry run --------------------------------------------------------------------------------
async def test_the_dry_run_tries_the_editor_text_on_a_described_item(client, database, clock):
    await signed_in(client, database, "manager")
    await two_queues(database)
    await make_agent(database, name="Anna", skills=["loans"])
    await make_agent(database, name="Boris", skills=["loans", "senior"], status="offline")
    form = {
        "definition": json.dumps(BIG_LOANS),
        "dry_item": '{"source": "phone", "amount_minor": 5000}',
    }
    response = await post_form(client, "/routing/rules/dry-run", form, headers=HTMX)
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="dry-run-result"')  # just the panel
    page = text_of(response)
    assert re.search(r'data-filter="0" data-matched="no">.*?site', response.text, re.S)
    assert re.search(r'data-filter="1" data-matched="yes">.*?big', response.text, re.S)
    assert "Queue «Senior» (Least loaded), priority 0." in page
    assert "Nobody can take it now. If nobody can take it, it waits in the queue." in page
    assert "Left out: Boris — offline." in page
    assert "after 1 min: notify the manager" in page
    assert "after 5 min: move to the queue «General»" in page
    assert "Not taken within 1 day: the item expires." in page

    form["dry_item"] = '{"source": "site", "priority": 3}'
    page = text_of(await post_form(client, "/routing/rules/dry-run", form, headers=HTMX))
    assert "Queue «General» (Least loaded), priority 3." in page
    assert "Anna would get it now." in page
    assert "The only one who could take it: Anna." in page
    assert await count(database, WorkItem) == 0  # nothing was written
    assert await versions(database) == []


async def test_the_dry_run_on_a_real_lead_explains_the_tie_break(client, database, clock):
    await signed_in(client, database, "manager")
    await make_queue(database, name="General", member_expression='"loans" in skills')
    senior = await make_queue(database, name="Senior", member_expression='"senior" in skills')
    anna = await make_agent(database, name="Anna", capacity=3)
    boris = await make_agent(database, name="Boris", capacity=3)
    # The lead to try waits in Senior (nobody there), so Anna's and Boris's loads stay equal.
    lead = f"lead:{uuid.uuid4()}"
    waiting = await submit(
        database, reference=lead, queue_id=senior.id, attributes={"source": "site"}
    )
    assert waiting.state == "waiting"
    first = await submit(database, reference=f"lead:{uuid.uuid4()}")
    clock.advance(5)
    second = await submit(database, reference=f"lead:{uuid.uuid4()}")
    assert {first.agent_id, second.agent_id} == {anna.id, boris.id}
    earlier, later = ("Anna", "Boris") if first.agent_id == anna.id else ("Boris", "Anna")
    clock.advance(5)
    editor = await client.get("/routing/rules/new", headers=HTML)
    assert f'value="{lead}"' in editor.text  # among the latest leads to pick from
    items_before = await count(database, WorkItem)
    form = {"definition": json.dumps(BIG_LOANS), "dry_pick": lead, "dry_item": ""}
    page = text_of(await post_form(client, "/routing/rules/dry-run", form, headers=HTMX))
    assert f"Tried on: {lead}" in page
    assert "Queue «General» (Least loaded), priority 0." in page
    assert f"{earlier} would get it now." in page
    assert (
        f"{earlier} rather than {later} — equal load (1 each); the last assignment was earlier."
        in page
    )
    assert "1 of 3" in page  # the candidates' load of their capacity
    assert await count(database, WorkItem) == items_before
    # A lead's page address or bare id works as well as its reference.
    form.pop("dry_pick")
    form["dry_reference"] = f"https://allot.example/leads/{lead.removeprefix('lead:')}"
    page = text_of(await post_form(client, "/routing/rules/dry-run", form, headers=HTMX))
    assert f"Tried on: {lead}" in page
    # An unknown reference is said so, in the panel.
    form["dry_reference"] = "lead:nobody"
    page = text_of(await post_form(client, "/routing/rules/dry-run", form, headers=HTMX))
    assert "reference: No work item with this reference" in page


async def test_the_dry_run_reports_problems_in_the_text_and_works_without_htmx(client, database):
    await signed_in(client, database, "manager")
    await two_queues(database)
    await make_agent(database, name="Anna")
    bad = {"definition": '{"filters": [{"name": "x", "when": "a ==", "queue": "General"}]}',
           "dry_item": "{}"}  # fmt: skip
    response = await post_form(client, "/routing/rules/dry-run", bad, headers=HTMX)
    assert response.status_code == 200  # htmx swaps it in
    assert "filters.0.when: Syntax error" in text_of(response)
    no_item = {"definition": json.dumps(BIG_LOANS), "dry_item": ""}
    page = text_of(await post_form(client, "/routing/rules/dry-run", no_item, headers=HTMX))
    assert "Give a lead's reference or describe an item" in page
    # Without JavaScript the whole editor comes back, with the result and the text kept.
    plain = {"name": "kept", "definition": json.dumps(BIG_LOANS), "dry_item": '{"source": "site"}'}
    response = await post_form(client, "/routing/rules/dry-run", plain)
    assert response.status_code == 200
    assert "<h1>New rules version</h1>" in response.text
    assert "Anna would get it now." in text_of(response)
    assert json.loads(textarea(response, "definition")) == BIG_LOANS
    assert await versions(database) == []


# -- why an item went where it went -------------------------------------------------------------
async def test_the_why_page_explains_a_real_decision(client, database, clock):
    await make_queue(database, name="Loans")
    anna = await make_agent(database, name="Anna", capacity=3)
    boris = await make_agent(database, name="Boris", capacity=3)
    await make_agent(database, name="Carl", status="offline")
    dora = await make_agent(database, name="Dora")
    async with database.transaction() as session:
        today = utcnow().date()
        await agent_service.add_leave(
            session, dora.id, LeaveCreate(starts_on=today, ends_on=today + timedelta(days=2))
        )
    first = await submit(database, reference="lead:1")
    clock.advance(5)
    second = await submit(database, reference="lead:2")
    assert {first.agent_id, second.agent_id} == {anna.id, boris.id}
    clock.advance(5)
    third = await submit(database, reference="lead:3")
    winner, runner_up = ("Anna", "Boris") if third.agent_id == anna.id else ("Boris", "Anna")
    assert await count(database, Decision, Decision.item_id == third.item_id) == 1

    await signed_in(client, database, "manager")
    response = await client.get(f"/routing/items/{third.item_id}/why", headers=HTML)
    assert response.status_code == 200
    page = text_of(response)
    assert "lead:3" in page
    assert f"Assigned to {winner} · queue «Loans»." in page
    assert (
        f"{winner} rather than {runner_up} — equal load (1 each); the last assignment was earlier."
        in page
    )
    assert "decided by: time of the last assignment" in page
    assert "Left out: Carl — offline; Dora — on leave." in page
    missing = await client.get(f"/routing/items/{uuid.uuid4()}/why", headers=HTML)
    assert missing.status_code == 404


async def test_the_explanations_are_in_russian_for_russian_readers(client, database, clock):
    await make_queue(database, name="Займы")
    await make_agent(database, name="Анна")
    await make_agent(database, name="Карл", status="offline")
    result = await submit(database, reference="lead:ru")
    await signed_in(client, database, "manager", locale="ru")
    page = text_of(
        await client.get(f"/routing/items/{result.item_id}/why", headers={"Accept": "text/html"})
    )
    assert "Назначено: Анна" in page
    assert "Карл — не в сети" in page
    rules = text_of(await client.get("/routing/rules", headers={"Accept": "text/html"}))
    assert "Правила распределения" in rules
