"""Progress reports (lat/progress.py): a bar on a terminal, throttled plain lines in logs."""

from __future__ import annotations

from lat import progress as progress_module


def test_a_log_gets_plain_lines_but_not_from_a_short_command(capsys, monkeypatch):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    with progress_module.progress_bar(True) as report:
        assert report is not None
        report("design", 1, 8)  # within the first LINE_SECONDS: silent
    assert capsys.readouterr().err == ""
    every_call = progress_module._plain_lines(every=0.0)
    every_call("design", 3, 8000)
    every_call("fit", 17, 17)
    assert capsys.readouterr().err == "lat: design 3/8,000\nlat: fit 17/17\n"


def test_disabled_progress_reports_nothing():
    with progress_module.progress_bar(False) as report:
        assert report is None
