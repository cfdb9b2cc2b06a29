"""The what-if page (`routing:manage`): pick a saved rule set version or paste one, a period
and a seed; see what would have happened next to what did (simulator.py,
simulation_report.py). It reads the history and writes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Request
from starlette.responses import Response

from allot.contexts.routing import ROUTING_MANAGE, rule_service
from allot.contexts.routing import simulation_history as history
from allot.contexts.routing.forms import text
from allot.contexts.routing.rule_texts import duration_text
from allot.contexts.routing.simulation_report import Report, simulate_period
from allot.kernel.auth import Principal, require
from allot.kernel.clock import utcnow
from allot.kernel.config import get_settings
from allot.kernel.errors import NotFound, ValidationFailed
from allot.kernel.i18n import gettext as _
from allot.kernel.web.routers import view_router
from allot.kernel.web.templating import render
from allot.kernel.web.uow import ReadSession

router = view_router("/routing")
Manager = Annotated[Principal, require(ROUTING_MANAGE)]

FIELDS = ("rule_set", "rules_json", "date_from", "date_to", "seed")
# Where a problem is shown: the service's field path -> the form input.
ERROR_INPUTS = {"period.from": "date_from", "period.to": "date_to", "rules_json": "rules_json"}


def _defaults() -> dict[str, str]:
    """The last seven whole days, in the business time zone."""
    today = utcnow().astimezone(ZoneInfo(get_settings().business_timezone)).date()
    return {
        "rule_set": "",
        "rules_json": "",
        "date_from": (today - timedelta(days=7)).isoformat(),
        "date_to": (today - timedelta(days=1)).isoformat(),
        "seed": "0",
    }


async def _page(
    request: Request,
    session: Any,
    values: dict[str, str],
    *,
    report: Report | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    versions = [
        (
            str(r.version),
            f"v{r.version} — {r.name}" + (" (" + _("active") + ")" if r.status == "active" else ""),
        )
        for r in await rule_service.list_rule_sets(session)
    ]
    choices = [("", _("As recorded: the rules each item was really routed by")), *versions]
    context = {
        "values": values,
        "errors": errors or {},
        "rule_sets": choices,
        "report": report,
        "duration": duration_text,
    }
    return render(
        request, "routing/simulate.html", context, block="content", status_code=status_code
    )


@router.get("/simulate")
async def simulate_page(request: Request, session: ReadSession, _manager: Manager) -> Response:
    return await _page(request, session, _defaults())


@router.post("/simulate")
async def run_simulation(request: Request, session: ReadSession, _manager: Manager) -> Response:
    form = await request.form()
    values = {name: text(form, name) for name in FIELDS}
    try:
        zone = ZoneInfo(get_settings().business_timezone)
        start, end = history.period_bounds(values["date_from"], values["date_to"], zone)
        try:
            seed = int(values["seed"] or "0")
        except ValueError:
            raise ValidationFailed.on("seed", _("Must be a whole number"), "invalid") from None
        rules: Any = history.RECORDED
        label = None
        if values["rules_json"].strip():
            rules = await history.rules_from_json(session, values["rules_json"], "rules_json")
            label = _("pasted rules")
        elif values["rule_set"]:
            rules = await history.rules_by_version(session, int(values["rule_set"]))
        report = await simulate_period(
            session, start=start, end=end, rules=rules, seed=seed, label=label
        )
    except (ValidationFailed, NotFound, ValueError) as exc:
        return await _page(request, session, values, errors=_errors(exc), status_code=422)
    return await _page(request, session, values, report=report)


def _errors(exc: Exception) -> dict[str, str]:
    """Each problem at its input; the pasted rules' problems each with their place in them."""
    if isinstance(exc, ValidationFailed) and exc.errors:
        found: dict[str, list[str]] = {}
        for error in exc.errors:
            name = next((i for f, i in ERROR_INPUTS.items() if error.field.startswith(f)), "")
            name = name or (error.field if error.field in FIELDS else "__all__")
            where = error.field.removeprefix("rules_json").lstrip(".")
            shown = (
                f"{where}: {error.message}"
                if name in ("rules_json", "__all__") and where
                else error.message
            )
            found.setdefault(name, []).append(shown)
        return {name: "; ".join(messages) for name, messages in found.items()}
    if isinstance(exc, NotFound):
        return {"rule_set": exc.detail or _("No such rule set")}
    return {"__all__": str(exc)}
