"""Users and API tokens over the API (admin only), and who the caller is."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from mko.access import tokens as access_tokens
from mko.access import users as access_users
from mko.access.tokens import expires_in_days
from mko.http.deps import SessionDep, SettingsDep
from mko.http.routing import MkoRoute
from mko.http.security import PrincipalDep
from mko.platform.db.models.access import Role
from mko.platform.validation import FreeText, InputModel

router = APIRouter(prefix="/api", tags=["access"], route_class=MkoRoute)
me_router = APIRouter(prefix="/api", tags=["access"], route_class=MkoRoute)


class UserCreate(InputModel):
    """A new user."""

    username: str = Field(min_length=1, max_length=64)
    password: FreeText = Field(min_length=1, max_length=200, description="write-only")
    role: Role = Role.VIEWER


class UserPublic(BaseModel):
    """A user, never with a password."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    role: Role
    disabled: bool


class TokenCreate(InputModel):
    """A new API token."""

    name: str = Field(min_length=1, max_length=100)
    role: Role = Role.VIEWER
    expires_days: float | None = Field(default=None, gt=0, le=3650)


class TokenPublic(BaseModel):
    """A token without its secret."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    prefix: str
    role: Role
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    """The one response that carries the token itself: store it now."""

    token: str


class Me(BaseModel):
    """The caller."""

    name: str
    role: Role
    kind: str


@me_router.get("/me")
def me(principal: PrincipalDep) -> Me:
    """Who you are authenticated as."""
    return Me(name=principal.name, role=principal.role, kind=principal.kind)


@router.get("/users")
def list_users(session: SessionDep) -> list[UserPublic]:
    """All users."""
    return [UserPublic.model_validate(u) for u in access_users.list_users(session)]


@router.post("/users", status_code=status.HTTP_201_CREATED)
def create_user(session: SessionDep, settings: SettingsDep, body: UserCreate) -> UserPublic:
    """Add a user (argon2-hashed password)."""
    return UserPublic.model_validate(
        access_users.create_user(session, settings, body.username, body.password, body.role)
    )


@router.delete("/users/{username}", status_code=status.HTTP_204_NO_CONTENT)
def remove_user(session: SessionDep, username: str) -> Response:
    """Remove a user with their tokens and sessions."""
    access_users.remove_user(session, username)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tokens")
def list_tokens(session: SessionDep) -> list[TokenPublic]:
    """All tokens (never their secret)."""
    return [TokenPublic.model_validate(t) for t in access_tokens.list_tokens(session)]


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(session: SessionDep, body: TokenCreate) -> TokenCreated:
    """Create a token; the response is the only time it is shown."""
    token, plain = access_tokens.create_token(
        session, body.name, body.role, expires_in=expires_in_days(body.expires_days)
    )
    return TokenCreated.model_validate({**TokenPublic.model_validate(token).model_dump(), "token": plain})


@router.delete("/tokens/{name}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(session: SessionDep, name: str) -> Response:
    """Revoke a token; it stops working at once."""
    access_tokens.revoke_token(session, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
