"""What to type when an id does not exist: where the ids are listed, and how one is added.

One table for every adapter: the CLI appends it to an unknown id's one-line error, and the services
put it in the 422 of a field that names a missing object (a rule's ``ups_id``, a node's ``cluster_id``).
"""

from __future__ import annotations

__all__ = ["does_not_exist", "next_step"]

# By kind (as NotFoundError names it): the command that adds one, where people add them.
_ADD = {
    "node": "`mko node add HOSTNAME IP --cluster-id ID`",
    "cluster": "`mko cluster add NAME`",
    "UPS": "`mko ups add NAME UPSNAME@NUT-HOST`",
    "Proxmox host": "`mko proxmox add NAME --host ADDRESS --token-id USER@REALM!TOKEN --secret -`",
    "schedule": "`mko schedule add …`",
    "rule": "`mko ups create-rule …`",
    "power rule": "`mko ups create-rule …`",
    "user": "`mko user add NAME`",
}
# The command that lists them, with their ids (names for users and agents).
_LIST = {
    "node": "ids: `mko node list`",
    "cluster": "ids: `mko cluster list`",
    "UPS": "ids: `mko ups list`",
    "Proxmox host": "ids: `mko proxmox list`",
    "operation": "ids: `mko operations list`",
    "schedule": "ids: `mko schedule list`",
    "rule": "ids: `mko ups list-rules`",
    "power rule": "ids: `mko ups list-rules`",
    "outage": "ids: `mko ups outages`",
    "token": "ids: `mko token list`",
    "user": "names: `mko user list`",
    "agent": "names: `mko agent list`",
}


def next_step(kind: str) -> str:
    """ "add one with `…` (ids: `…`)" for ``kind``; "" for a kind people neither list nor add."""
    listed = _LIST.get(kind)
    if kind in _ADD:
        return f"add one with {_ADD[kind]}" + (f" ({listed})" if listed else "")
    return listed or ""


def does_not_exist(kind: str, ident: object) -> str:
    """ "UPS 1 does not exist: add one with `mko ups add …` (ids: `mko ups list`)"."""
    step = next_step(kind)
    return f"{kind} {ident} does not exist" + (f": {step}" if step else "")
