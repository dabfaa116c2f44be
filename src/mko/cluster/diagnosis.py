"""Why a recovery did not bring every node back Ready, told from what the control planes answered.

What MicroK8s (1.28-1.31) and kubectl show, and what it means:

* ``The connection to the server 127.0.0.1:16443 was refused`` (after klog ``memcache.go`` lines) on a
  control plane where ``microk8s start`` ran: nothing serves the API; kubelite exits and systemd restarts
  it (``systemctl show snap.microk8s.daemon-kubelite -p NRestarts,SubState``: a growing count,
  ``auto-restart``; canonical/microk8s #4548): a **kubelite crash loop**.
* ``Error from server (Timeout): …`` / ``context deadline exceeded`` / ``no available dqlite leader``
  from every control plane that runs: the API is up but its datastore has no leader: **lost dqlite
  quorum** (fewer than a majority of the voters, the first three control planes, are up, or their
  cluster.yaml is stale after a power loss, canonical/microk8s #3114).
* The API answers but nodes stay ``Ready=Unknown``/``False``: **node NotReady** (kubelet not posting).

``microk8s status`` exits 0 whatever it finds (canonical/microk8s #3974): only its first line is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RESTORE_DOC", "ControlPlaneView", "Diagnosis", "diagnose", "parse_status"]

RESTORE_DOC = "docs/shutdown.md, “Restoring the datastore”"
QUORUM_DOC = "https://microk8s.io/docs/restore-quorum"

_REFUSED = re.compile(r"connection to the server \S+ was refused|connect: connection refused")
_TIMEOUT = re.compile(
    r"^Error from server \((Timeout|InternalError|ServiceUnavailable)\)|context deadline exceeded|dqlite"
    r"|unable to return a response in the time allotted"
)


@dataclass
class ControlPlaneView:
    """What one control plane answered during the recovery."""

    hostname: str
    started: bool
    api_error: str | None = None  # kubectl's last stderr line when `get nodes` failed; None: it answered
    status: str = ""  # first line of `microk8s status`
    kubelite: dict[str, str] = field(default_factory=dict)  # systemctl show properties, when read


@dataclass
class Diagnosis:
    """The likely cause, said for people, with what to do next."""

    kind: str  # quorum_lost | kubelite_crashloop | nodes_not_ready | no_control_plane
    message: str
    detail: dict[str, Any]


def parse_status(stdout: str) -> dict[str, Any]:
    """``microk8s status`` (pretty format): running, high availability, datastore voters and stand-bys."""
    lines = stdout.splitlines()
    found: dict[str, Any] = {"running": bool(lines) and lines[0].strip() == "microk8s is running"}
    found["first_line"] = lines[0].strip() if lines else ""
    for line in lines[1:]:
        text = line.strip()
        if text.startswith("high-availability:"):
            found["high_availability"] = text.split(":", 1)[1].strip() == "yes"
        elif text.startswith("datastore master nodes:"):
            found["voters"] = [a for a in text.split(":", 1)[1].split() if a != "none"]
        elif text.startswith("datastore standby nodes:"):
            found["standby"] = [a for a in text.split(":", 1)[1].split() if a != "none"]
    return found


def _restore_hint(backup: dict[str, Any] | None) -> str:
    if backup is None:
        return f"restore procedure: {RESTORE_DOC} (mko holds no backup of this cluster)"
    return (
        f"restore procedure: {RESTORE_DOC}; latest backup: {backup['path']} (taken {backup['taken_at']}"
        f" on {backup['node']}, {backup['keys']} keys)"
    )


def diagnose(
    views: list[ControlPlaneView],
    voters: list[str],
    not_ready: list[str],
    backup: dict[str, Any] | None,
    cluster_id: int | str = "ID",
) -> Diagnosis:
    """Pick the likeliest cause from the control planes' answers (``voters``: dqlite voters by name;
    ``cluster_id`` goes into the commands the advice names)."""
    started = [v for v in views if v.started]
    detail: dict[str, Any] = {
        "control_planes": [v.__dict__ for v in views],
        "voters": voters,
        "not_ready": not_ready,
        "backup": backup,
        "restore_doc": RESTORE_DOC,
    }
    if not started:
        return Diagnosis(
            "no_control_plane",
            "no control plane started, so nothing can serve the API: power them on"
            f" (`mko wol wake-cluster {cluster_id} --wait`) and run the recovery again"
            f" (`mko cluster recover {cluster_id}`); {_restore_hint(backup)}",
            detail,
        )
    if any(v.api_error is None for v in started):
        return Diagnosis(
            "nodes_not_ready",
            f"the API answers, but {', '.join(not_ready)} stayed NotReady: their kubelet does not post"
            " status (node off or MicroK8s not running there); run `microk8s inspect` on them and read"
            " `journalctl -u snap.microk8s.daemon-kubelite`",
            detail,
        )
    refused = [v for v in started if v.api_error and _REFUSED.search(v.api_error)]
    looping = [v for v in refused if v.kubelite.get("SubState") == "auto-restart" or _restarts(v) > 0]
    if (refused and len(refused) == len(started)) or looping:
        hosts = ", ".join(v.hostname for v in (looping or refused))
        seen = "; ".join(
            f"{v.hostname}: NRestarts={v.kubelite['NRestarts']} {v.kubelite.get('SubState', '')}".rstrip()
            for v in looping
            if "NRestarts" in v.kubelite
        )
        return Diagnosis(
            "kubelite_crashloop",
            f"the API refused connections on {hosts} for the whole recovery although `microk8s start` ran:"
            f" kubelite is not serving (a crash loop{': ' + seen if seen else ''}); read `journalctl -u"
            f" snap.microk8s.daemon-kubelite` there, then `sudo snap restart microk8s.daemon-kubelite`;"
            f" if the datastore is damaged, {_restore_hint(backup)}",
            detail,
        )
    up = [v.hostname for v in started if v.hostname in voters]
    timing_out = [v.hostname for v in started if v.api_error and _TIMEOUT.search(v.api_error)]
    return Diagnosis(
        "quorum_lost",
        f"lost dqlite quorum: the API on {', '.join(timing_out or [v.hostname for v in started])} cannot read"
        f" its datastore (no dqlite leader); {len(up)} of {len(voters)} voter(s) started ({', '.join(up)})."
        f" Bring the other voters back, or recover the quorum ({QUORUM_DOC}); {_restore_hint(backup)}",
        detail,
    )


def _restarts(view: ControlPlaneView) -> int:
    try:
        return int(view.kubelite.get("NRestarts", "0"))
    except ValueError:
        return 0
