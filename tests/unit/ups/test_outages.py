"""Outage records and the power-down marker: what a restart of mko relies on."""

from __future__ import annotations

import stat
from pathlib import Path

from sqlalchemy.orm import Session

from mko.inventory.clusters import create_cluster
from mko.inventory.schemas import ClusterCreate
from mko.platform.db.models.outages import OutagePhase
from mko.platform.settings import Settings
from mko.ups import outages
from mko.ups.schemas import UpsCreate
from mko.ups.service import create_ups


def test_the_marker_is_private_read_once_and_named_in_words(settings: Settings, tmp_path: Path) -> None:
    assert outages.take_marker(settings) is None
    path = outages.write_marker(settings, {"at": "2026-12-07T03:11:58+00:00", "ups": "rack", "outage_id": 4})
    assert path == Path(settings.database_url.removeprefix("sqlite:///")).parent / "powerdown.flag"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    marker = outages.take_marker(settings)
    assert marker == {"at": "2026-12-07T03:11:58+00:00", "ups": "rack", "outage_id": 4}
    assert not path.exists() and outages.take_marker(settings) is None  # read once
    assert outages.marker_words(marker) == "mko shut its host down for power at 2026-12-07 03:11:58 UTC"
    assert outages.marker_words(None) == ""


def test_a_second_shutdown_carries_the_open_outage_on_with_what_was_up_before(
    settings: Settings, session: Session
) -> None:
    cluster = create_cluster(session, ClusterCreate(name="home")).id
    ups = create_ups(session, settings, UpsCreate(name="rack", ups_name="myups")).id
    first = outages.open_outage(
        session, ups_id=ups, cluster_id=cluster, event="power_loss", event_id=1, reason="rule 1",
        nodes_up=[3, 1, 2],
    )  # fmt: skip
    outages.set_phase(session, first, OutagePhase.RESTORING, "restoring")
    # Power lost again during the restore: nodes 1-3 are off now, but they were up before the outage.
    again = outages.open_outage(
        session, ups_id=ups, cluster_id=cluster, event="power_loss", event_id=9, reason="rule 1",
        nodes_up=[],
    )  # fmt: skip
    assert again.id == first.id and again.nodes_up == [1, 2, 3]
    assert again.phase == OutagePhase.SHUTTING_DOWN and again.summary == "shutting down again: rule 1"
    outages.close(session, again, OutagePhase.RESTORED, "3/3 up")
    assert again.closed_at is not None and outages.find_open(session) == []
    assert outages.close_for_cluster(session, cluster, "nothing open") == []
