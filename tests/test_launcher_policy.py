"""The exit policy of ``scrapy fleet``: every way a run ends, its status and its why."""

from __future__ import annotations

import signal

import pytest

from scrapy_fleet.launcher.policy import FINISHED, RunEnd, Verdict, WorkerEnd, decide


def ok(slot: int, reason: str = "finished") -> WorkerEnd:
    return WorkerEnd(slot=slot, exit_code=0, reason=reason)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_wins_over_everything_else(signum, status):
    # even a crawl seen finished, with a worker given up on: the user stopped it
    run = RunEnd(workers=(ok(1), WorkerEnd(slot=2, exit_code=1, gave_up=True)), signal=signum,
                 done=True)
    name = signal.Signals(signum).name
    assert decide(run) == Verdict(status, f"interrupted ({name}): resume with the same command")


def test_finished_with_every_worker_well():
    assert decide(RunEnd(workers=(ok(1), ok(2)), done=True)) == Verdict(0, FINISHED)


def test_a_worker_that_never_ran_is_no_failure():
    run = RunEnd(workers=(ok(1), WorkerEnd(slot=2, exit_code=None)), done=True)
    assert decide(run).status == 0


def test_finished_but_a_worker_failed():
    run = RunEnd(workers=(ok(1), WorkerEnd(slot=2, exit_code=-9)), done=True)
    assert decide(run) == Verdict(
        1, "the crawl is finished, but worker 2 ended with signal 9 (SIGKILL)")


def test_finished_but_a_worker_recorded_a_fault_though_it_exited_0():
    run = RunEnd(workers=(ok(1), WorkerEnd(slot=2, exit_code=0, reason="fleet_error",
                                           error="output not writable")), done=True)
    assert decide(run) == Verdict(
        1, "the crawl is finished, but worker 2 stopped on an error: output not writable")


def test_finished_by_the_others_after_one_was_given_up_on():
    run = RunEnd(workers=(WorkerEnd(slot=1, exit_code=1, gave_up=True), ok(2)), done=True)
    assert decide(run) == Verdict(1, "the crawl is finished, but worker 1 kept dying (exit status 1)")


def test_finished_but_a_worker_was_stuck():
    # done, but worker 2 kept running until the launcher stopped it (it then exited 0)
    run = RunEnd(workers=(ok(1), WorkerEnd(slot=2, exit_code=0, reason="shutdown", stuck=True)),
                 done=True)
    assert decide(run) == Verdict(
        1, "the crawl is finished, but worker 2 was still running long after the end and was "
           "stopped")


def test_every_complaint_of_a_finished_crawl_is_listed():
    run = RunEnd(workers=(WorkerEnd(slot=1, exit_code=-9, stuck=True),
                          WorkerEnd(slot=2, exit_code=3, error="Redis gone")), done=True)
    why = decide(run).why
    assert why.startswith("the crawl is finished, but worker 1 was still running")
    assert why.endswith(", worker 2 stopped on an error: Redis gone")


def test_late_joiners_stopped_after_the_end():
    # the launcher stopped them itself (they exit 0, "shutdown"): the crawl is finished
    run = RunEnd(workers=(ok(1), ok(2, "shutdown")), late_joiners=True)
    assert decide(run) == Verdict(
        0, f"{FINISHED}; workers that started after the end were stopped")


def test_late_joiners_and_a_failed_worker():
    run = RunEnd(workers=(ok(1), WorkerEnd(slot=2, exit_code=-9)), done=True, late_joiners=True)
    assert decide(run) == Verdict(
        1, "the crawl is finished, but worker 2 ended with signal 9 (SIGKILL)")


def test_unfinished_stopped_on_errors_lists_only_the_faulted_workers():
    run = RunEnd(workers=(WorkerEnd(slot=1, exit_code=4, error="cannot read the list", gave_up=True),
                          ok(2, "shutdown"),
                          WorkerEnd(slot=3, exit_code=3, error="Redis gone", gave_up=True)))
    assert decide(run) == Verdict(
        1, "stopped on an error: worker 1: cannot read the list; worker 3: Redis gone")


def test_unfinished_workers_kept_dying():
    run = RunEnd(workers=(WorkerEnd(slot=1, exit_code=1, gave_up=True),
                          WorkerEnd(slot=2, exit_code=-11, gave_up=True)))
    assert decide(run) == Verdict(
        1, "workers kept dying: worker 1 (exit status 1), worker 2 (signal 11 (SIGSEGV)); "
           "the crawl is kept, resume with the same command")


def test_unfinished_workers_closed_early():
    run = RunEnd(workers=(ok(1, "closespider_pagecount"), ok(2, "closespider_pagecount"),
                          ok(3, None), ok(4)))
    assert decide(run) == Verdict(
        1, "the workers stopped before the crawl was finished (closespider_pagecount); "
           "resume with the same command")


def test_unfinished_a_worker_without_a_close_reason_is_named_by_its_exit():
    run = RunEnd(workers=(WorkerEnd(slot=1, exit_code=-9), ok(2, None)))
    assert decide(run).why == ("the workers stopped before the crawl was finished "
                               "(signal 9 (SIGKILL)); resume with the same command")


def test_unfinished_for_no_reason_anyone_recorded():
    run = RunEnd(workers=(ok(1, None), ok(2)))
    assert decide(run) == Verdict(
        1, "the workers stopped before the crawl was finished (unknown reason); "
           "resume with the same command")
