"""The plain table writer never cuts a cell: off a terminal a line is as long as its content; on a
terminal too narrow for the table the widest cell folds onto the next lines of its column."""

from __future__ import annotations

import os
import sys

import pytest

from mko.cli import common

ROW = ("1", "node-with-a-very-long-hostname-indeed", "aa:bb:cc:dd:ee:ff")
HEADER = ("id", "hostname", "mac")


def test_off_a_terminal_lines_are_as_long_as_their_content(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_rows([ROW], header=HEADER)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == list(ROW)


def test_on_a_narrow_terminal_the_widest_cell_folds_and_nothing_is_cut(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(common.shutil, "get_terminal_size", lambda: os.terminal_size((40, 20)))
    common.print_rows([ROW], header=HEADER)
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 40 for line in lines), lines
    assert "aa:bb:cc:dd:ee:ff" in lines[1]  # the MAC is whole
    assert (
        "".join(line[4:].split("  ")[0].strip() for line in lines[1:]) == ROW[1]
    )  # the host name folded, whole
