"""`mko user …` and `mko token …`: local administration, as the OS user who owns the database."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table

from mko.access.tokens import create_token, expires_in_days, is_expired, list_tokens, revoke_token
from mko.access.users import create_user, list_users, remove_user, set_password
from mko.cli.common import console, open_session
from mko.platform.db.models.access import Role
from mko.platform.settings import get_settings

user_app = typer.Typer(help="Users of the web UI and API: add, list, remove, passwd.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)

PasswordOpt = Annotated[
    str | None,
    typer.Option("--password", envvar="MKO_NEW_PASSWORD", help="the password (asked for when omitted)"),
]


def _password(given: str | None) -> str:
    if given:
        return given
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise typer.BadParameter("the passwords differ")
    return first


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[Role, typer.Option(help="admin, operator or viewer")] = Role.VIEWER,
    password: PasswordOpt = None,
) -> None:
    """Add a user."""
    with open_session() as session:
        user = create_user(session, get_settings(), username, _password(password), role)
    console.print(f"user {user.username} added ({user.role.value})")


@user_app.command("list")
def user_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List users."""
    with open_session() as session:
        users = [
            {"id": u.id, "username": u.username, "role": u.role.value, "disabled": u.disabled}
            for u in list_users(session)
        ]
    if as_json:
        typer.echo(json.dumps(users, indent=2))
        return
    table = Table(title="Users")
    for column in ("id", "username", "role", "disabled"):
        table.add_column(column)
    for user in users:
        table.add_row(*(str(user[c]) for c in ("id", "username", "role", "disabled")))
    console.print(table)


@user_app.command("remove")
def user_remove(username: str) -> None:
    """Remove a user, their tokens and sessions."""
    with open_session() as session:
        remove_user(session, username)
    console.print(f"user {username} removed")


@user_app.command("passwd")
def user_passwd(username: str, password: PasswordOpt = None) -> None:
    """Change a user's password (ends their web sessions)."""
    with open_session() as session:
        set_password(session, get_settings(), username, _password(password))
    console.print(f"password of {username} changed")


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[Role, typer.Option(help="admin, operator, viewer or agent")] = Role.VIEWER,
    expires_days: Annotated[float | None, typer.Option("--expires-days", help="lifetime in days")] = None,
) -> None:
    """Create a token; it is printed once and never again."""
    with open_session() as session:
        token, plain = create_token(session, name, role, expires_in=expires_in_days(expires_days))
    console.print(f"token {token.name} ({token.role.value}) created; copy it now, it is not shown again:")
    typer.echo(plain)


@token_app.command("list")
def token_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List tokens (never their secret)."""
    with open_session() as session:
        tokens = [
            {
                "name": t.name,
                "prefix": t.prefix + "…",
                "role": t.role.value,
                "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                "revoked": t.revoked_at is not None,
                "expired": is_expired(t.expires_at),
                "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            }
            for t in list_tokens(session)
        ]
    if as_json:
        typer.echo(json.dumps(tokens, indent=2))
        return
    table = Table(title="API tokens")
    for column in ("name", "prefix", "role", "expires_at", "revoked", "expired", "last_used_at"):
        table.add_column(column)
    for token in tokens:
        table.add_row(*(str(token[c] if token[c] is not None else "—") for c in token))
    console.print(table)


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke a token; it stops working at once."""
    with open_session() as session:
        revoke_token(session, name)
    console.print(f"token {name} revoked")
