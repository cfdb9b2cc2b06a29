"""`allot users ...` and `allot tokens ...`: manage accounts and API tokens from the shell
(bootstrapping the first admin, scripting). Everything goes through identity's public interface
and is audited as done by the CLI."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.ext.asyncio import AsyncSession

from allot.cli.runtime import console, load_settings, print_rows, transaction
from allot.contexts import identity
from allot.kernel.errors import NotFound

users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)


async def _user_by_email(session: AsyncSession, email: str) -> identity.UserInfo:
    user = await identity.get_user_by_email(session, email)
    if user is None:
        raise NotFound(detail=f"no user with email {email}")
    return user


@users_app.command("create")
def create_user(
    email: Annotated[str, typer.Option(help="Login email")],
    role: Annotated[
        list[str], typer.Option("--role", help="Role (repeat for several): admin, manager, ...")
    ],
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password"),
    ],
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    locale: Annotated[str, typer.Option(help="UI language: ru or en")] = "ru",
) -> None:
    """Create a user."""
    settings = load_settings()

    async def work(session: AsyncSession) -> identity.UserInfo:
        return await identity.create_user(
            session, email=email, password=password, roles=role, display_name=name, locale=locale
        )

    user = transaction(settings, work)
    roles = ", ".join(sorted(user.roles))
    console.print(f"Created user {escape(user.email)} ({roles}), id {user.id}")


@users_app.command("list")
def list_users() -> None:
    """List users."""
    settings = load_settings()

    async def work(session: AsyncSession) -> list[identity.UserInfo]:
        return list(await identity.list_users(session))

    users = transaction(settings, work)
    rows = [
        (
            user.email,
            user.display_name or "",
            ", ".join(sorted(user.roles)),
            "yes" if user.is_active else "no",
            str(user.id),
        )
        for user in users
    ]
    print_rows(("email", "name", "roles", "active", "id"), rows)


@users_app.command("deactivate")
def deactivate_user(email: Annotated[str, typer.Option(help="Login email")]) -> None:
    """Deactivate a user: they can no longer sign in, and their sessions and tokens stop working."""
    settings = load_settings()

    async def work(session: AsyncSession) -> None:
        user = await _user_by_email(session, email)
        await identity.deactivate_user(session, user.id)

    transaction(settings, work)
    console.print(f"Deactivated {email}.")


@tokens_app.command("create")
def create_token(
    email: Annotated[str, typer.Option(help="Owner's login email")],
    name: Annotated[str, typer.Option(help="What the token is for")] = "cli",
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Permission the token may use (repeat; default: all)"),
    ] = None,
) -> None:
    """Issue an API token. The token is printed ALONE on the last line (shown only once)."""
    settings = load_settings()

    async def work(session: AsyncSession) -> tuple[uuid.UUID, str]:
        user = await _user_by_email(session, email)
        token_id, plaintext = await identity.issue_token(
            session, user_id=user.id, name=name, scopes=scope or None
        )
        return token_id, plaintext

    token_id, plaintext = transaction(settings, work)
    console.print(f"Token {token_id} issued to {email}; it is shown only this once:")
    typer.echo(plaintext)


@tokens_app.command("revoke")
def revoke_token(token_id: Annotated[uuid.UUID, typer.Option("--id", help="Token id")]) -> None:
    """Revoke an API token."""
    settings = load_settings()

    async def work(session: AsyncSession) -> None:
        await identity.revoke_token(session, token_id)

    transaction(settings, work)
    console.print(f"Revoked token {token_id}.")
