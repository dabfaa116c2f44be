"""Owners for operations in tests: a process that really ran and is gone, or a pid reused since."""

from __future__ import annotations

import os
import subprocess

from mko.operations.ownership import ProcessIdentity, process_start, this_process
from mko.platform.db.models.operations import Operation

__all__ = ["exited_process", "make_owned_by", "reused_pid"]


def exited_process() -> ProcessIdentity:
    """The identity of a process that ran on this host and has exited (and was reaped)."""
    child = subprocess.Popen(["sleep", "30"])
    ticks = process_start(child.pid)
    child.kill()
    child.wait()
    me = this_process()
    assert ticks is not None and me.space is not None, "needs /proc"
    return ProcessIdentity(me.host, child.pid, f"{ticks}@{me.space}")


def reused_pid() -> ProcessIdentity:
    """This process's pid with another start time: the process that had it ended, this one took it."""
    me = this_process()
    assert me.start is not None and me.space is not None, "needs /proc"
    ticks = int(me.start.partition("@")[0])
    return ProcessIdentity(me.host, os.getpid(), f"{max(0, ticks - 100)}@{me.space}")


def make_owned_by(operation: Operation, owner: ProcessIdentity) -> None:
    """Record ``owner`` as the process running ``operation`` (the caller commits)."""
    operation.owner_host, operation.owner_pid, operation.owner_start = owner.host, owner.pid, owner.start
