"""Typed FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from mko.operations import Actor
from mko.settings import Settings

__all__ = ["ActorDep", "SessionDep", "SettingsDep"]


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, always closed."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        yield session


def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_actor(request: Request) -> Actor:
    """Who is calling (the authenticated user or token, set by the auth dependency) and from where."""
    client = request.client.host if request.client else ""
    principal = getattr(request.state, "principal", None)
    return Actor(name=principal.actor_name if principal is not None else "api", source=client)


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ActorDep = Annotated[Actor, Depends(get_actor)]
