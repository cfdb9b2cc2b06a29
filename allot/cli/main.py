"""The `allot` command (also `python -m allot`)."""

from __future__ import annotations

import typer

from allot.cli import (
    check,
    deliveries,
    demo,
    events,
    leads,
    migrate,
    roles,
    routing,
    serve,
    users,
)

app = typer.Typer(
    name="allot",
    help="Allot: take incoming work in, route it to the right person, carry it through its life.",
    no_args_is_help=True,
    add_completion=False,
    # Locals in a traceback could print passwords and tokens.
    pretty_exceptions_show_locals=False,
)
app.command()(serve.serve)
app.command()(roles.api)
app.command()(roles.worker)
app.command()(roles.relay)
app.command()(roles.timers)
app.command()(demo.demo)
app.command()(check.check)
app.add_typer(migrate.app, name="migrate")
app.add_typer(users.users_app, name="users")
app.add_typer(leads.leads_app, name="leads")
app.add_typer(routing.routing_app, name="routing")
app.add_typer(users.tokens_app, name="tokens")
app.add_typer(events.events_app, name="events")
app.add_typer(deliveries.deliveries_app, name="deliveries")


def main() -> None:
    app(prog_name="allot")
