"""The rule editor's words: a rule set in plain language, validation errors as a manager reads
them (the place in the rule set, the position in an expression), and the example a first-time
user starts from. Pure functions; rule_views.py reads and renders.

The editor takes the definition as JSON. Lines whose first non-blank characters are `//` are
notes: they are blanked before parsing (so line numbers in JSON errors stay right) and are not
saved. A JSON string cannot span lines, so such a line is never inside a value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from babel.dates import format_timedelta
from pydantic import ValidationError

from allot.contexts.routing.rules import Filter, RuleSetDefinition, Step
from allot.kernel.errors import AllotError
from allot.kernel.i18n import N_, locale_var
from allot.kernel.i18n import gettext as _

ITEM_FIELDS = ("kind", "priority", "weight")
# What a lead brings to routing (leads' intake.routing_attributes), beside kind/priority/weight.
LEAD_ATTRIBUTES = ("source", "amount_minor", "currency", "term_months")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SYNTAX = re.compile(r"^Syntax error at position (\d+) near (.*)$")
_UNKNOWN_QUEUE = re.compile(r"^No active queue named (.*)$")
_SENIOR = re.compile(r"senior|vip|expert|старш|крупн|эксперт", re.IGNORECASE)

# json's messages -> ours.
_JSON_REASONS = {
    "Expecting ',' delimiter": N_("a comma is missing"),
    "Expecting ':' delimiter": N_("a colon is missing"),
    "Expecting property name enclosed in double quotes": N_(
        "a field name in double quotes was expected (is there a comma too many?)"
    ),
    "Expecting value": N_("a value was expected"),
    "Extra data": N_("there is text after the end"),
    "Unterminated string starting at": N_("a string is not closed"),
    "Invalid control character at": N_("a line break or tab inside a string"),
}
# The definition's own checks (rules.py validators) -> ours.
_VALUE_ERRORS = {
    "A step must move, reprioritise or notify": N_(
        "A step must move the item, change its priority or notify someone"
    ),
    "Steps must be in increasing order of after_seconds": N_(
        "Steps must be in increasing order of after_seconds"
    ),
    "Every step must come before ttl_seconds": N_("Every step must come before ttl_seconds"),
    "fallback_queue is required with, and only with, 'fallback'": N_(
        'fallback_queue is required with, and only with, "when_nobody_available": "fallback"'
    ),
}
_PYDANTIC_TYPES = {
    "missing": N_("Required."),
    "extra_forbidden": N_("Unknown field."),
    "string_too_short": N_("Must not be empty."),
    "string_too_long": N_("Too long."),
    "string_type": N_("Must be text in double quotes."),
    "int_parsing": N_("Enter a whole number."),
    "int_type": N_("Enter a whole number."),
    "int_from_float": N_("Enter a whole number."),
    "list_type": N_("Must be a list in square brackets."),
    "dict_type": N_("Must be a JSON object."),
    "model_type": N_("Must be a JSON object."),
    "too_long": N_("Too many entries."),
}


# -- errors -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RuleError:
    """One problem, at `path` ("filters.1.when"; "definition" for the whole text; a form input's
    name such as "name"); `excerpt` and `column` (1-based) point at the spot when known."""

    path: str
    message: str
    excerpt: str | None = None
    column: int | None = None


class RuleTextInvalid(Exception):
    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__(errors)
        self.errors = errors


def strip_notes(text: str) -> str:
    return "\n".join("" if line.lstrip().startswith("//") else line for line in text.split("\n"))


def parse_json_object(text: str, path: str) -> dict[str, Any]:
    """The text as a JSON object (notes removed), or RuleTextInvalid naming line and column."""
    source = strip_notes(text)
    try:
        data = json.loads(source)
    except json.JSONDecodeError as exc:
        reason = _JSON_REASONS.get(exc.msg)
        lines = source.split("\n")
        excerpt = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else None
        message = _(
            "Not valid JSON: line %(line)s, column %(column)s: %(reason)s",
            line=exc.lineno,
            column=exc.colno,
            reason=_(reason) if reason else exc.msg,
        )
        raise RuleTextInvalid([RuleError(path, message, excerpt, exc.colno)]) from exc
    if not isinstance(data, dict):
        raise RuleTextInvalid([RuleError(path, _("Must be a JSON object."))])
    return data


def _value_at(data: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def pydantic_errors(exc: ValidationError, prefix: str = "") -> list[RuleError]:
    """pydantic's errors, each at its full path inside the definition, in our words."""
    errors = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"])
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        kind = error["type"]
        context = error.get("ctx") or {}
        if kind in ("greater_than_equal", "greater_than"):
            message = _("Must be at least %(limit)s.", limit=context.get("ge", context.get("gt")))
        elif kind in ("less_than_equal", "less_than"):
            message = _("Must be at most %(limit)s.", limit=context.get("le", context.get("lt")))
        elif kind == "literal_error":
            message = _("Choose one of: %(expected)s.", expected=context.get("expected", ""))
        elif kind == "value_error":
            text = str(context.get("error", error["msg"]))
            wording = _VALUE_ERRORS.get(text)
            message = _(wording) if wording else text
        elif kind in _PYDANTIC_TYPES:
            message = _(_PYDANTIC_TYPES[kind])
        else:
            message = str(error["msg"])
        errors.append(RuleError(path or "definition", message))
    return errors


def service_errors(exc: AllotError, definition: dict[str, Any] | None = None) -> list[RuleError]:
    """A service's ValidationFailed / Conflict: each field error at its place in the definition
    ("body.definition.filters.1.when" -> "filters.1.when"), expression errors with the spot."""
    errors = []
    for error in exc.errors:
        parts = error.field.split(".")
        if "definition" in parts:
            parts = parts[parts.index("definition") + 1 :]
        elif parts and parts[0] == "body":
            parts = parts[1:]
        path = ".".join(parts) or "definition"
        errors.append(_service_error(path, error.message, _value_at(definition, parts)))
    if not errors:
        errors.append(RuleError("definition", _(exc.detail) if exc.detail else _(exc.title)))
    return errors


def _service_error(path: str, message: str, value: Any) -> RuleError:
    syntax = _SYNTAX.match(message)
    if syntax:
        column = int(syntax.group(1))
        text = _(
            "Syntax error at position %(position)s near %(token)s",
            position=column,
            token=syntax.group(2),
        )
        return RuleError(path, text, value if isinstance(value, str) else None, column)
    if message == "Syntax error":
        return RuleError(path, _("Syntax error"), value if isinstance(value, str) else None)
    unknown = _UNKNOWN_QUEUE.match(message)
    if unknown:
        return RuleError(path, _("No active queue named %(name)s", name=unknown.group(1)))
    if message == "Nothing to relax: the filter has no require":
        return RuleError(path, _('Nothing to relax: the filter has no "require"'))
    if message == "No work item with this reference":
        return RuleError(path, _("No work item with this reference"))
    return RuleError(path, message)


# -- plain words --------------------------------------------------------------------------------
def duration_text(seconds: int | float | None) -> str:
    """90 -> "1 min 30 sec"; 86400 -> "1 day" (in the reader's language, short units)."""
    if seconds is None:
        return "—"
    rest = max(int(seconds), 0)
    parts = []
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1)):
        amount, rest = divmod(rest, size)
        if amount:
            delta = timedelta(**{unit: amount})
            parts.append(
                format_timedelta(delta, format="short", threshold=1, locale=locale_var.get())
            )
    return " ".join(parts) or format_timedelta(
        timedelta(0), format="short", locale=locale_var.get()
    )


def step_text(step: Step) -> str:
    parts = []
    if step.queue:
        parts.append(_("move to the queue «%(queue)s»", queue=step.queue))
    if step.priority is not None:
        parts.append(_("set priority %(priority)s", priority=step.priority))
    if step.raise_priority:
        parts.append(_("raise priority by %(amount)s", amount=step.raise_priority))
    if step.relax:
        parts.append(_("relax the requirement: any member of the queue may take it"))
    for audience in step.notify:
        parts.append(_("notify the manager") if audience == "manager" else _("notify the customer"))
    return "; ".join(parts)


def policy_text(rule: Filter) -> str:
    if rule.when_nobody_available == "fallback":
        return _(
            "If nobody can take it, it moves to the queue «%(queue)s» at once.",
            queue=rule.fallback_queue or "",
        )
    if rule.when_nobody_available == "escalate":
        return _("If nobody can take it, it waits and the manager is told at once.")
    return _("If nobody can take it, it waits in the queue.")


@dataclass(frozen=True, slots=True)
class StepView:
    after: str
    does: str


@dataclass(frozen=True, slots=True)
class FilterView:
    index: int
    name: str
    when: str
    queue: str
    priority: int | None
    steps: list[StepView] = field(default_factory=list)
    require: str = ""
    ttl: str | None = None
    policy: str = ""


def filter_view(definition: RuleSetDefinition, index: int) -> FilterView:
    rule = definition.filters[index]
    ttl = rule.ttl_seconds if rule.ttl_seconds is not None else definition.ttl_seconds
    return FilterView(
        index=index,
        name=rule.name,
        when=rule.when,
        queue=rule.queue,
        priority=rule.priority,
        steps=[StepView(duration_text(s.after_seconds), step_text(s)) for s in rule.steps],
        ttl=duration_text(ttl) if ttl is not None else None,
        policy=policy_text(rule),
        require=rule.require,
    )


def definition_views(definition: RuleSetDefinition) -> list[FilterView]:
    return [filter_view(definition, n) for n in range(len(definition.filters))]


def ageing_text(definition: RuleSetDefinition) -> str | None:
    ageing = definition.ageing
    if ageing is None:
        return None
    return _(
        "Every %(every)s without an owner, priority rises by %(by)s, up to %(up_to)s.",
        every=duration_text(ageing.every_seconds),
        by=ageing.raise_by,
        up_to=ageing.up_to,
    )


def pretty_json(definition: dict[str, Any]) -> str:
    return json.dumps(definition, ensure_ascii=False, indent=2)


# -- the example a first-time user starts from ----------------------------------------------
def example_definition(queue_names: list[str]) -> str:
    """Big loans to a senior queue; after 1 min tell the manager, after 5 min widen to the
    general queue; unowned for 24 h: expired. Everything else to the general queue. Uses the
    real queue names when there are any, so the example saves as it is."""
    senior, general = _example_queues(queue_names)

    def quoted(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    big_name, rest_name = _("Big loans"), _("Everything else")
    notes = {
        "order": _(
            "Filters are tried from the top; the first whose “when” matches chooses the queue."
        ),
        "notes": _("Lines starting with // are notes for you; they are not saved."),
        "big": _("Big loans (over 500 000 ₽; amounts are in kopecks) go to the senior queue."),
        "manager": _("Nobody took it within 1 minute: tell the manager."),
        "widen": _("After 5 minutes: open it to the general queue too."),
        "ttl": _("Nobody took it within 24 hours: it expires."),
        "rest": _("Everything else: an empty “when” matches every item."),
    }
    widen = (
        [
            "        // " + notes["widen"],
            f'        {{"after_seconds": 300, "queue": {quoted(general)}}}',
        ]
        if general != senior
        else []
    )
    manager_step = '        {"after_seconds": 60, "notify": ["manager"]}' + ("," if widen else "")
    lines = [
        "// " + notes["order"],
        "// " + notes["notes"],
        "{",
        '  "filters": [',
        "    {",
        "      // " + notes["big"],
        f'      "name": {quoted(big_name)},',
        '      "when": "amount_minor >= 50000000",',
        f'      "queue": {quoted(senior)},',
        '      "steps": [',
        "        // " + notes["manager"],
        manager_step,
        *widen,
        "      ],",
        "      // " + notes["ttl"],
        '      "ttl_seconds": 86400',
        "    },",
        "    {",
        "      // " + notes["rest"],
        f'      "name": {quoted(rest_name)},',
        '      "when": "",',
        f'      "queue": {quoted(general)}',
        "    }",
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _example_queues(names: list[str]) -> tuple[str, str]:
    """(senior, general) for the example: a queue named like a senior one, else the second
    queue; the general one is the first other queue (the highest priority: the default)."""
    if not names:
        return _("Senior"), _("Senior")
    senior = next((n for n in names if _SENIOR.search(n)), names[1] if len(names) > 1 else names[0])
    general = next((n for n in names if n != senior), senior)
    return senior, general


def normalise_reference(text: str) -> str:
    """What a manager pastes -> a routing reference: "lead:<id>" as it is, a bare lead id or a
    lead page's address -> "lead:<id>"."""
    value = text.strip()
    page = re.search(rf"/leads/({_UUID})", value)
    if page:
        return f"lead:{page.group(1).lower()}"
    if re.fullmatch(_UUID, value):
        return f"lead:{value.lower()}"
    return value
