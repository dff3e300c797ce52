"""Progress: a bar on a terminal, plain periodic lines in a log (no carriage-return floods)."""

from __future__ import annotations

import io

from oanet.progress import Progress, track


def test_log_mode_prints_plain_lines_every_interval_and_a_final_line():
    log = io.StringIO()
    with Progress(total=4, desc="evaluate", unit="img", file=log, interval=0.0, tty=False) as bar:
        for _ in range(4):
            bar.update(1)
            bar.set_postfix(loss="0.5")
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 5 and lines[0].startswith("evaluate: 1/4 img (25%)") and "eta" in lines[0]
    assert lines[-1].startswith("evaluate: 4/4 img (100%)") and "done in" in lines[-1] and "loss=0.5" in lines[-1]


def test_log_mode_is_quiet_between_intervals_and_when_disabled():
    log = io.StringIO()
    with Progress(total=1000, desc="x", file=log, interval=3600, tty=False) as bar:
        for _ in range(1000):
            bar.update(1)
    assert log.getvalue().count("\n") == 1  # only the final line
    quiet = io.StringIO()
    assert list(track(range(3), desc="y", file=quiet, disable=True)) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_terminal_mode_uses_a_bar():
    out = io.StringIO()
    with Progress(total=3, desc="train", file=out, tty=True) as bar:
        bar.update(3)
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("OANET_PROGRESS_INTERVAL", "7")
    assert Progress(file=io.StringIO(), tty=False).interval == 7.0
    monkeypatch.setenv("OANET_PROGRESS_INTERVAL", "soon")
    assert Progress(file=io.StringIO(), tty=False).interval == 30.0
