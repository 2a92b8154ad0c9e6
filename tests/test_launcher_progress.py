"""The progress line: redrawn in place on a terminal, a plain line now and then otherwise."""

from __future__ import annotations

import io

from scrapy_fleet.launcher.progress import Progress

STATUS = {
    "stats": {"pages": 12, "items": 10, "errors": 1, "pending": 5, "leased": 2, "acked": 0},
    "workers": [{"alive": True}, {"alive": False}],
}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_says_the_whole_crawl():
    progress = Progress(io.StringIO(), "links", 5)
    progress.started = 1000.0  # a round start: started + 83 - started is exactly 83
    line = progress.line(STATUS, None, 1, progress.started + 83)
    assert line == ("[links] 0:01:23  pages 12  items 10  errors 1  0.0 pages/s  pending 5  "
                    "leased 2  workers 1 alive (1 here)")
    later = {**STATUS, "stats": {**STATUS["stats"], "pages": 32}}  # pages are live
    assert "2.0 pages/s" in progress.line(later, None, 1, progress.started + 93)


def test_an_idle_keep_alive_crawl_says_what_it_waits_for():
    progress = Progress(io.StringIO(), "feed", 5)
    idle = {"stats": {"pending": 0, "leased": 0}, "workers": [{"alive": True}],
            "state": {"keep_alive": "1"}}
    assert progress.line(idle, None, 1, progress.started).endswith(
        "keep-alive: waiting for new entries")
    idle["state"]["idle_timeout"] = 30.0
    assert progress.line(idle, None, 1, progress.started).endswith("(ends after 30 s idle)")
    busy = {**idle, "stats": {"pending": 3, "leased": 0}}
    assert "keep-alive" not in progress.line(busy, None, 1, progress.started)


def test_idle_workers_beside_queued_work_are_explained():
    progress = Progress(io.StringIO(), "links", 5)
    held = {"stats": {"pending": 40, "leased": 8}, "workers": [{"alive": True}] * 3,
            "waiting": {"capped_hosts": 1, "delayed_hosts": 0, "cap": 8}}
    assert progress.line(held, None, 3, progress.started).endswith(
        "pending work waits: 1 host at the per-host limit of 8 (CONCURRENT_REQUESTS_PER_DOMAIN)")
    held["waiting"] = {"capped_hosts": 0, "delayed_hosts": 5, "cap": 8}
    assert progress.line(held, None, 3, progress.started).endswith(
        "pending work waits: 5 hosts in their download delay")


def test_redis_unreachable_is_said_on_the_line():
    progress = Progress(io.StringIO(), "links", 5)
    line = progress.line(None, "Connection refused", 3, progress.started)
    assert line == "[links] 0:00:00  Redis unreachable (Connection refused); 3 local workers running"


def test_a_terminal_gets_one_line_redrawn_and_messages_above_it():
    out = Terminal()
    progress = Progress(out, "links", 5)
    progress.show(STATUS, None, 1, progress.started)
    progress.show(STATUS, None, 1, progress.started + 1)
    progress.say("worker 1 died")
    progress.show(STATUS, None, 1, progress.started + 2)
    progress.end()
    text = out.getvalue()
    assert text.count("\n") == 2  # the message, and the end of the last progress line
    assert text.startswith("\r[links] 0:00:00") and "\r[links] 0:00:01" in text
    assert "\rworker 1 died\n\r[links] 0:00:02" in text
    assert text.endswith("(1 here)\n")


def test_a_pipe_gets_a_plain_line_every_interval():
    out = io.StringIO()
    progress = Progress(out, "links", 5)
    for second in range(12):
        progress.show(STATUS, None, 1, progress.started + second)
    progress.end()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["0:00:00", "0:00:05", "0:00:10"]
    assert "\r" not in out.getvalue()
