"""Progress lines: how far, how fast, how long to go; at most one every few seconds."""

from __future__ import annotations

from tasks.engine.runtime.progress import RateLog, progress_line


def test_progress_line_with_and_without_total():
    assert progress_line("counting fr", 120_000, 200_000, 4.0, "lines") == \
        "counting fr: 120,000/200,000 lines (60%), 30,000 lines/s, ETA 0:03"
    assert progress_line("building", 40, 5000, 20.0, "variants") == "building: 40/5,000 variants (1%), 2 variants/s, ETA 41:20"
    assert progress_line("counting de", 50_000, None, 65.0, "lines") == "counting de: 50,000 lines, 769 lines/s, 1:05 so far"
    assert progress_line("building", 5, 5, 2.0, "variants") == "building: 5/5 variants (100%), 2.5 variants/s"


def test_rate_log_is_throttled():
    now, lines = [0.0], []
    log = RateLog("counting en", "lines", lines.append, total=1000, every=5.0, clock=lambda: now[0])
    for t, done in [(1, 100), (4.9, 400), (5.1, 500), (7, 700), (10.2, 1000)]:
        now[0] = t
        log.update(done)
    assert lines == ["counting en: 500/1,000 lines (50%), 98 lines/s, ETA 0:05",
                     "counting en: 1,000/1,000 lines (100%), 98 lines/s"]
    log.update(1000, final=True)
    assert len(lines) == 3
