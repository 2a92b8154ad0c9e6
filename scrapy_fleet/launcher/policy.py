"""How ``scrapy fleet`` ends: its exit status and the one line saying why.

A pure function of what happened, gathered by the supervisor, so that every way a run can
end is decided in one place and tested without running a crawl. The statuses are those of
docs/launcher.md:

* 0: the crawl is finished and every worker ended well;
* 1: it is not finished (workers gave up, stopped on an error or closed early; the same
  command resumes it), or it is finished but a worker ended badly;
* 2: usage errors, decided before any worker starts (:data:`EXIT_USAGE`);
* 128 + N: interrupted by signal N (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from scrapy_fleet.launcher.formatting import signal_name

EXIT_FINISHED = 0
EXIT_NOT_FINISHED = 1  # workers stopped (gave up, Redis lost, closed early) before the end
EXIT_USAGE = 2  # bad arguments, nothing to join, Redis unreachable at start

FINISHED = "finished: the frontier is empty and no worker holds work"
RESUME = "resume with the same command"


@dataclass(frozen=True)
class WorkerEnd:
    """How one worker slot ended (its last run)."""

    slot: int
    exit_code: int | None  # None: it never ran
    reason: str | None = None  # Scrapy's close reason, if known
    error: str | None = None  # the fault it stopped on, if it stopped on one
    gave_up: bool = False  # the launcher stopped restarting it
    stuck: bool = False  # still running well after the crawl was done: the launcher stopped it

    @property
    def ended_badly(self) -> bool:
        return (self.exit_code not in (0, None) or self.error is not None or self.gave_up
                or self.stuck)


@dataclass(frozen=True)
class RunEnd:
    """What happened in one run of the launcher."""

    workers: tuple[WorkerEnd, ...]
    signal: int | None = None  # the first SIGINT/SIGTERM the launcher received
    done: bool = False  # the crawl was seen finished (state "done") at some point
    # the crawl finished, then a worker started late opened a new, never-seeded crawl
    # (it would wait forever): the launcher stopped its workers
    late_joiners: bool = False


@dataclass(frozen=True)
class Verdict:
    status: int  # the launcher's exit status
    why: str  # one line, first of the summary


def decide(run: RunEnd) -> Verdict:
    """The exit status of ``scrapy fleet`` and why, from what happened."""
    if run.signal is not None:
        name = signal.Signals(run.signal).name
        return Verdict(128 + run.signal, f"interrupted ({name}): {RESUME}")
    if run.done or run.late_joiners:
        return _finished(run)
    return _unfinished(run)


def _finished(run: RunEnd) -> Verdict:
    complaints = [_complaint(w) for w in run.workers if w.ended_badly]
    if complaints:
        # the data is complete, but something needs a look: not 0 (scripts and CI see it)
        return Verdict(EXIT_NOT_FINISHED, "the crawl is finished, but " + ", ".join(complaints))
    if run.late_joiners:
        return Verdict(EXIT_FINISHED, f"{FINISHED}; workers that started after the end "
                                      "were stopped")
    return Verdict(EXIT_FINISHED, FINISHED)


def _complaint(w: WorkerEnd) -> str:
    if w.stuck:
        return f"worker {w.slot} was still running long after the end and was stopped"
    if w.error is not None:
        return f"worker {w.slot} stopped on an error: {w.error}"
    if w.gave_up:
        return f"worker {w.slot} kept dying ({signal_name(w.exit_code or 0)})"
    return f"worker {w.slot} ended with {signal_name(w.exit_code or 0)}"


def _unfinished(run: RunEnd) -> Verdict:
    errors = [w for w in run.workers if w.error is not None]
    if errors:
        return Verdict(EXIT_NOT_FINISHED, "stopped on an error: " + "; ".join(
            f"worker {w.slot}: {w.error}" for w in errors))
    gave_up = [w for w in run.workers if w.gave_up]
    if gave_up:
        return Verdict(EXIT_NOT_FINISHED, "workers kept dying: " + ", ".join(
            f"worker {w.slot} ({signal_name(w.exit_code or 0)})" for w in gave_up)
            + f"; the crawl is kept, {RESUME}")
    # they all closed by themselves before the end: a CLOSESPIDER_* limit, Redis lost...
    reasons = sorted({
        w.reason or signal_name(w.exit_code)
        for w in run.workers
        if w.exit_code is not None and (w.exit_code != 0 or w.reason not in (None, "finished"))
    })
    return Verdict(EXIT_NOT_FINISHED, "the workers stopped before the crawl was finished ("
                   + (", ".join(reasons) or "unknown reason") + f"); {RESUME}")
