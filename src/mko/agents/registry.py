"""Agents: registration by heartbeat, who is online, who may report."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mko.access.principal import Principal
from mko.agents.schemas import AgentPublic
from mko.platform import validation
from mko.platform.db.models.access import ApiToken, Role
from mko.platform.db.models.agents import Agent
from mko.platform.db.models.base import utcnow
from mko.platform.errors import ConflictError, InputError, NotFoundError
from mko.platform.settings import Settings

if TYPE_CHECKING:
    from mko.agents.schemas import AgentHeartbeat

__all__ = ["heartbeat", "list_agents", "live_agents"]

log = logging.getLogger("mko.agents")


_AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")


def _check_name(name: str) -> str:
    if not _AGENT_NAME.fullmatch(name):
        raise InputError(
            "name", f"{validation.quoted(name)} is not an agent name (letters, digits, . _ - @; at most 100)"
        )
    return name


def _check_site(site: str) -> str:
    checked = validation.validate_site(site, "site")
    if checked is None or checked == "local":
        raise InputError("site", "name the site this agent serves (not empty, not 'local')")
    return checked


def is_online(agent: Agent, settings: Settings, now: datetime | None = None) -> bool:
    """Whether the agent's last heartbeat is recent enough."""
    now = now or utcnow()
    return now - agent.last_heartbeat_at <= timedelta(seconds=settings.agent_offline_after)


def live_agents(session: Session, site: str, settings: Settings) -> list[Agent]:
    """The agents of ``site`` heard from within ``agent_offline_after`` seconds."""
    since = utcnow() - timedelta(seconds=settings.agent_offline_after)
    query = select(Agent).where(Agent.site == site, Agent.last_heartbeat_at >= since).order_by(Agent.name)
    return list(session.scalars(query))


def list_agents(session: Session, settings: Settings) -> list[AgentPublic]:
    """Every agent with online/offline and the age of its last heartbeat."""
    now = utcnow()
    result = []
    for agent in session.scalars(select(Agent).order_by(Agent.site, Agent.name)):
        public = AgentPublic.model_validate(agent)
        public.online = is_online(agent, settings, now)
        public.seconds_since_heartbeat = round((now - agent.last_heartbeat_at).total_seconds(), 1)
        result.append(public)
    return result


def _token_id(session: Session, principal: Principal) -> int | None:
    if principal.kind != "token":
        return None
    return session.scalar(select(ApiToken.id).where(ApiToken.name == principal.name))


def _token_valid(session: Session, token_id: int | None) -> bool:
    if token_id is None:
        return False
    token = session.get(ApiToken, token_id)
    now = utcnow()
    return (
        token is not None
        and token.revoked_at is None
        and (token.expires_at is None or token.expires_at > now)
    )


def heartbeat(session: Session, principal: Principal, data: AgentHeartbeat) -> Agent:
    """Register or refresh an agent; refused: a name another valid token holds, or a token's second site."""
    name, site = _check_name(data.name), _check_site(data.site)
    token_id = _token_id(session, principal)
    if principal.role == Role.AGENT and token_id is not None:
        # A token serves the one site it first registered for: a stolen or misconfigured token of one
        # site never receives another site's MACs and SecureOn passwords.
        bound = session.scalars(
            select(Agent.site).where(Agent.token_id == token_id, Agent.site != site)
        ).first()
        if bound is not None:
            raise ConflictError(
                f"this agent token serves site {bound!r}; create another token for site {site!r}"
            )
    agent = session.scalars(select(Agent).where(Agent.name == name)).first()
    now = utcnow()
    if agent is None:
        agent = Agent(name=name, site=site, token_id=token_id, registered_at=now)
        session.add(agent)
        log.info("agent %s registered for site %s by %s", name, site, principal.actor_name)
    else:
        if agent.token_id != token_id and _token_valid(session, agent.token_id):
            raise ConflictError(f"agent name {name!r} is registered with another token")
        if agent.site != site:
            log.info("agent %s moved from site %s to %s", name, agent.site, site)
        agent.site, agent.token_id = site, token_id
    agent.host, agent.version, agent.last_heartbeat_at = data.host, data.version, now
    try:
        session.commit()
    except IntegrityError:  # two first heartbeats of one name at once: the other one won
        session.rollback()
        raise ConflictError(f"agent {name!r} registered concurrently; send the heartbeat again") from None
    return agent


def _agent_of(session: Session, principal: Principal, name: str) -> Agent:
    """The calling agent's row (registered by a heartbeat, with this token), refreshed as alive."""
    agent = session.scalars(select(Agent).where(Agent.name == name)).first()
    if agent is None:
        raise NotFoundError("agent", name)
    if agent.token_id != _token_id(session, principal) and _token_valid(session, agent.token_id):
        raise ConflictError(f"agent name {name!r} is registered with another token")
    return agent
