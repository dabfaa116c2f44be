"""Datastore backups: ``microk8s dbctl backup`` on the first control plane before it stops, copied to
mko's host, one private directory per cluster, the last N kept.

``dbctl backup`` needs the datastore running on that node (it talks to k8s-dqlite's kine.sock: exit 10
and "Please ensure the kubernetes apiserver is running and HA is enabled." otherwise), so it runs before
any control plane stops. It writes ``FILE.tar.gz`` holding one directory of ``N.key``/``N.data`` pairs,
one per datastore key, and prints ``The backup is: FILE.tar.gz``. MicroK8s 1.27+ on a datastore created by
1.26 or older can exit 0 with an archive of no keys (canonical/microk8s #4308) or hang: mko counts the
keys and runs it with a timeout.

On mko's host a backup is ``DIR/cluster-ID/backup-YYYYMMDDTHHMMSSZ-opN.tar.gz`` (0600, written to a
temporary file, fsync'd and renamed) beside a ``.json`` record of where and when it was taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mko.platform.db.models.base import utcnow
from mko.platform.errors import PowerError, SshTimeoutError
from mko.platform.files import atomic_file, private_directory, write_atomic
from mko.platform.settings import Settings, beside_database
from mko.ssh.client import SshSession

__all__ = ["Backup", "BackupOutcome", "backup_dir", "latest_backup", "list_backups", "take_backup"]

_ANNOUNCED = re.compile(r"^The backup is: (?P<file>\S+\.tar\.gz)$", re.MULTILINE)
_NOT_RUNNING = 10  # dbctl: no kine.sock here (services stopped) or HA not enabled
_REMOTE_TEMPLATE = "/tmp/mko-dqlite.XXXXXXXX"  # noqa: S108  (made by mktemp on the node: fresh, 0700)


class Backup(BaseModel):
    """One datastore backup kept on mko's host."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    size: int
    keys: int
    sha256: str
    node: str
    operation_id: int | None
    taken_at: str


@dataclass
class BackupOutcome:
    """How a backup went: ``ok``, or why not (``failed``, ``empty``, ``hung``, ``not_running``)."""

    state: str
    message: str
    backup: Backup | None = None
    detail: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether a backup with keys in it is stored."""
        return self.state == "ok"


def backup_dir(settings: Settings, cluster_id: int) -> Path:
    """The cluster's backup directory (not created)."""
    base = settings.dqlite_backup_dir or beside_database(settings.database_url, "dqlite-backups")
    return base / f"cluster-{int(cluster_id)}"


def list_backups(settings: Settings, cluster_id: int) -> list[Backup]:
    """The cluster's backups, newest first (archives without their record are left out)."""
    directory = backup_dir(settings, cluster_id)
    found = []
    for record in sorted(directory.glob("backup-*.json"), reverse=True):
        archive = record.with_name(record.name.removesuffix(".json") + ".tar.gz")
        with contextlib.suppress(OSError, ValueError, TypeError):
            if archive.is_file():
                found.append(Backup.model_validate_json(record.read_text()))
    return found


def latest_backup(settings: Settings, cluster_id: int) -> Backup | None:
    """The newest backup of the cluster, if any."""
    backups = list_backups(settings, cluster_id)
    return backups[0] if backups else None


def _count_keys(path: Path) -> int:
    """Datastore keys in a dbctl archive (``*.key`` members); ValueError when it is no gzip'd tar."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            return sum(1 for m in archive.getmembers() if m.isfile() and m.name.endswith(".key"))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"not a gzip'd tar archive: {exc}") from None


def _prune(directory: Path, keep: int) -> list[str]:
    """Delete all but the newest KEEP backups; return the names deleted."""
    records = sorted(directory.glob("backup-*.json"), reverse=True)
    removed = []
    for record in records[keep:]:
        stem = record.name.removesuffix(".json")
        with contextlib.suppress(FileNotFoundError):
            (directory / f"{stem}.tar.gz").unlink()
        record.unlink(missing_ok=True)
        removed.append(f"{stem}.tar.gz")
    return removed


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def take_backup(
    connection: SshSession,
    settings: Settings,
    cluster_id: int,
    *,
    node: str,
    operation_id: int | None,
    timeout: float,
    keep: int,
) -> BackupOutcome:
    """Run ``microk8s dbctl backup`` over CONNECTION, copy the archive here, keep the newest KEEP."""
    stem = f"backup-{utcnow().strftime('%Y%m%dT%H%M%SZ')}-op{operation_id or 0}"
    # A directory only root reads on the node (the archive holds every Secret of the cluster); mktemp
    # picks a fresh name, so nobody can plant a file or a link there first.
    made = await connection.run(["mktemp", "-d", _REMOTE_TEMPLATE], sudo=True, timeout=30)
    remote_dir = made.stdout.strip()
    if not made.ok or not remote_dir.startswith(_REMOTE_TEMPLATE.removesuffix("XXXXXXXX")):
        return BackupOutcome("failed", f"no private directory on {node}: {_last_line(made.stderr)}")
    try:
        outcome = await _dbctl(connection, f"{remote_dir}/{stem}", node, timeout)
        if isinstance(outcome, BackupOutcome):
            return outcome
        remote, detail = outcome
        directory = private_directory(backup_dir(settings, cluster_id))
        target = directory / f"{stem}.tar.gz"
        digest = await _copy(connection, remote, target, timeout)
        problem = _check_archive(target)
        if problem is not None:
            target.unlink(missing_ok=True)
            return BackupOutcome(problem[0], problem[1], None, detail)
        backup = Backup(
            name=target.name,
            path=str(target),
            size=target.stat().st_size,
            keys=_count_keys(target),
            sha256=digest,
            node=node,
            operation_id=operation_id,
            taken_at=utcnow().isoformat(),
        )
        write_atomic(directory / f"{stem}.json", backup.model_dump_json(indent=1).encode())
        pruned = _prune(directory, keep)
        message = f"{backup.name}: {backup.keys} keys, {backup.size} bytes, taken on {node}"
        if pruned:
            message += f"; {len(pruned)} older deleted (keeping {keep})"
        return BackupOutcome("ok", message, backup, detail | {"pruned": pruned})
    except (OSError, PowerError) as exc:
        return BackupOutcome("failed", f"copying the backup failed: {exc}")
    finally:
        with contextlib.suppress(PowerError):
            await connection.run(["rm", "-rf", "--", remote_dir], sudo=True, timeout=30)


async def _dbctl(
    connection: SshSession, output: str, node: str, timeout: float
) -> BackupOutcome | tuple[str, dict[str, Any]]:
    """Run dbctl; the remote archive's path and the command's record, or why there is none."""
    try:
        result = await connection.run(
            ["microk8s", "dbctl", "backup", "-o", output], sudo=True, timeout=timeout
        )
    except SshTimeoutError:
        return BackupOutcome("hung", f"`microk8s dbctl backup` did not finish within {timeout:g} s")
    detail = result.as_dict()
    announced = _ANNOUNCED.search(result.stdout)
    if result.exit_status == _NOT_RUNNING:
        why = f"the datastore is not running on {node}: {_last_line(result.stdout)}"
        return BackupOutcome("not_running", why, None, detail)
    if not result.ok or announced is None:
        why = _last_line(result.stdout) or _last_line(result.stderr) or "no archive named"
        return BackupOutcome(
            "failed", f"`microk8s dbctl backup` exited {result.exit_status}: {why}", None, detail
        )
    return announced["file"], detail


async def _copy(connection: SshSession, remote: str, target: Path, timeout: float) -> str:
    """Copy REMOTE into TARGET durably; return its SHA-256 (OSError when it cannot be read there)."""
    digest = hashlib.sha256()
    with atomic_file(target) as handle:

        def write(chunk: bytes) -> None:
            digest.update(chunk)
            handle.write(chunk)

        copied = await connection.copy_out(["cat", "--", remote], write, sudo=True, timeout=timeout)
        if not copied.ok:
            raise OSError(f"`cat {remote}` exited {copied.exit_status}: {_last_line(copied.stderr)}")
    return digest.hexdigest()


def _check_archive(path: Path) -> tuple[str, str] | None:
    """("failed" | "empty", why) when the archive cannot serve a restore."""
    try:
        keys = _count_keys(path)
    except ValueError as exc:
        return "failed", f"the archive is unreadable: {exc}"
    if keys == 0:
        return (
            "empty",
            f"`microk8s dbctl backup` exited 0 but its archive ({path.stat().st_size} bytes) holds no"
            " datastore keys (canonical/microk8s #4308)",
        )
    return None
