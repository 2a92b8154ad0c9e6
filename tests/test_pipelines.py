"""The JSON-lines pipeline: whole lines from many processes, UTF-8 as is, dedupe by key,
real write faults (a full device, a file size limit, a small or read-only file system,
a removed directory), rotation, and new against resumed crawls."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import scrapy
from scrapy.exceptions import DropItem
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from fleet_examples.items import FilmItem, LinkedPageItem, SiteItem
from scrapy_fleet.errors import FatalItemError
from scrapy_fleet.itemkeys import ItemKeyMiddleware, ItemKeys, request_item_key
from scrapy_fleet.pipelines import JsonLinesFile, JsonLinesPipeline, OutputWriteError, dedupe_fields


class NamedSpider(scrapy.Spider):
    name = "named"


def make_pipeline(tmp_path: Path, crawl_id: str | None = "crawl-1", **settings: object) -> JsonLinesPipeline:
    """A pipeline as Scrapy builds it, opened for ``crawl_id`` (what the fleet scheduler says)."""
    crawler = get_crawler(NamedSpider, {"FLEET_OUTPUT": str(tmp_path / "out" / "%(name)s.jsonl"), **settings})
    crawler.spider = crawler._create_spider()
    pipeline = JsonLinesPipeline.from_crawler(crawler)
    pipeline.open(NamedSpider.name, crawl_id)
    return pipeline


def read_lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def test_items_become_utf8_json_lines_with_non_ascii_kept(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)
    film = FilmItem(index=1, movie_id=1203, title="霸王别姬", actors=["张国荣"], release_time="1993", score=9.5, image=None)
    assert pipeline.process_item(film) is film
    pipeline.process_item({"text": "two\nlines\u2028and a separator", "bad": "\udcff"})
    pipeline.close_spider()
    path = tmp_path / "out" / "named.jsonl"
    raw = path.read_bytes()
    assert "霸王别姬".encode() in raw and b"\\u" not in raw.split(b"\n")[0]
    assert raw.count(b"\n") == 2
    records = read_lines(path)
    assert records[0] == dict(film)
    assert records[1]["text"] == "two\nlines\u2028and a separator"
    raw.decode("utf-8")  # a lone surrogate is escaped, never written as invalid UTF-8
    assert pipeline.stats.get_value("fleet/output/items_written") == 2


def test_items_with_a_written_key_are_dropped_others_never(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)
    site = SiteItem(rank=1, domain="a.com", url="http://a.com/", final_url=None, status=None, title=None, error="dns")
    pipeline.process_item(site)
    with pytest.raises(DropItem, match="domain='a.com'"):
        pipeline.process_item(SiteItem(site, rank=2))
    page = LinkedPageItem(site, url="http://a.com/x", depth=1)
    pipeline.process_item(page)
    with pytest.raises(DropItem):
        pipeline.process_item(LinkedPageItem(page))
    pipeline.process_item({"no": "key"})
    pipeline.process_item({"no": "key"})  # items without a dedupe_key are never dropped
    pipeline.process_item(SiteItem(rank=3, url="http://b.com/"))  # key field unset: never dropped
    pipeline.process_item(SiteItem(rank=3, url="http://b.com/"))
    pipeline.close_spider()
    assert len(read_lines(tmp_path / "out" / "named.jsonl")) == 6
    assert pipeline.stats.get_value("fleet/output/duplicates_dropped") == 2


def test_keys_written_by_an_earlier_run_are_remembered(tmp_path: Path) -> None:
    first = make_pipeline(tmp_path)
    for index in (1, 2, 3):
        first.process_item(FilmItem(index=index, title=f"film {index}"))
    first.close_spider()
    path = tmp_path / "out" / "named.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"index": 9, "title": "cut short by a cra')  # a crash mid-line
    second = make_pipeline(tmp_path)
    for index in (2, 3, 4, 9):
        try:
            second.process_item(FilmItem(index=index, title=f"film {index}"))
        except DropItem:
            pass
    second.close_spider()
    lines = path.read_bytes().split(b"\n")
    assert lines[3] == b'{"index": 9, "title": "cut short by a cra'  # kept, and not glued to the next line
    records = [json.loads(line) for line in lines[4:] if line]
    assert [r["index"] for r in records] == [4, 9]


def test_dedupe_can_be_turned_off(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, FLEET_OUTPUT_DEDUPE=False)
    pipeline.process_item(FilmItem(index=1))
    pipeline.process_item(FilmItem(index=1))
    pipeline.close_spider()
    assert len(read_lines(tmp_path / "out" / "named.jsonl")) == 2


def test_declared_keys() -> None:
    assert dedupe_fields(SiteItem()) == ("domain",)
    assert dedupe_fields(LinkedPageItem()) == ("url",)
    assert dedupe_fields(FilmItem()) == ("index",)
    assert dedupe_fields({"index": 1}) == ()


WRITERS = 6
ITEMS_PER_WRITER = 1500


def _writer(path: str, writer: int, barrier: multiprocessing.synchronize.Barrier, overlap: bool) -> None:
    out = JsonLinesFile(Path(path))
    out.open()
    barrier.wait()  # all writers start together
    for n in range(ITEMS_PER_WRITER):
        # 1 in 3 lines is far beyond PIPE_BUF (4 KiB), so atomicity cannot come from the kernel's pipe rule
        filler = ("長" * 3000) if n % 3 == 0 else "x" * (n % 50)
        key = n if overlap else writer * ITEMS_PER_WRITER + n
        out.append({"index": key, "writer": writer, "n": n, "filler": filler}, ("index",))
    out.close()


@pytest.mark.parametrize("overlap", [False, True], ids=["distinct-keys", "same-keys"])
def test_many_processes_append_whole_lines(tmp_path: Path, overlap: bool) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(str(path), w, barrier, overlap)) for w in range(WRITERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    records = read_lines(path)  # every line parses: nothing torn or interleaved
    keys = [r["index"] for r in records]
    if overlap:
        assert sorted(keys) == list(range(ITEMS_PER_WRITER)), "each key written exactly once across processes"
    else:
        assert len(records) == WRITERS * ITEMS_PER_WRITER and len(set(keys)) == len(keys)
        for writer in range(WRITERS):  # each process's lines stay in its own order
            assert [r["n"] for r in records if r["writer"] == writer] == list(range(ITEMS_PER_WRITER))


# --- faults: a write that fails raises, never leaves a torn line, never takes a key ---


def output_of(pipeline: JsonLinesPipeline) -> Path:
    assert pipeline.file is not None
    return pipeline.file.path


def request_keyed(pipeline: JsonLinesPipeline, item: Any, key: bytes = b"k" * 16) -> Any:
    """``item`` as the key middleware hands it on: with a request key."""
    assert pipeline.keys is not None
    pipeline.keys.set(item, key)
    return item


def test_a_full_device_raises_a_fatal_error_naming_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "named.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    pipeline = make_pipeline(tmp_path)
    with pytest.raises(FatalItemError) as failed:
        pipeline.process_item(FilmItem(index=1, title="霸王别姬"))
    assert isinstance(failed.value, OutputWriteError)
    assert str(out / "named.jsonl") in str(failed.value) and "ENOSPC" in str(failed.value)
    with pytest.raises(OutputWriteError, match="ENOSPC"):
        pipeline.process_item(request_keyed(pipeline, {"plain": 1}))
    assert pipeline.stats.get_value("fleet/output/items_written") is None
    assert pipeline.stats.get_value("fleet/output/write_errors") == 2


def test_a_removed_directory_raises_instead_of_writing_to_a_deleted_file(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)
    pipeline.process_item(FilmItem(index=1))
    shutil.rmtree(tmp_path / "out")
    with pytest.raises(OutputWriteError, match=r"named\.jsonl.*ENOENT"):
        pipeline.process_item(FilmItem(index=2))
    assert not (tmp_path / "out").exists()  # nothing recreated behind the user's back


def in_child(task: Callable[..., Any], *args: Any) -> Any:
    """Run ``task`` in a forked process (for process-wide limits); its result or exception text."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()

    def run() -> None:
        try:
            child.send(("ok", task(*args)))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            child.send(("error", f"{type(exc).__name__}: {exc}"))

    proc = ctx.Process(target=run)
    proc.start()
    assert parent.poll(60), "the child sent nothing"
    outcome = parent.recv()
    proc.join(10)
    assert outcome[0] == "ok", outcome[1]
    return outcome[1]


def _write_under_a_size_limit(path: str) -> list[str]:
    """Append past RLIMIT_FSIZE (a short write, then EFBIG), lift it, append again."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us instead of EFBIG
    out = JsonLinesFile(Path(path), crawl_id="c1")
    out.open()
    out.append({"index": 1, "text": "fits"}, ("index",))
    size = os.path.getsize(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for 100 bytes only
    seen = []
    for record, fields, key in (
        ({"index": 2, "text": "x" * 300}, ("index",), None),  # 100 bytes go, then EFBIG
        ({"text": "y" * 300}, (), b"k" * 16),  # a request-keyed line: entry, then line
    ):
        try:
            out.append(record, fields, key)
            seen.append("written")
        except OutputWriteError as exc:
            seen.append(str(exc))
        seen.append(str(os.path.getsize(path) - size))  # what the failure left behind
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # the fault is gone
    # the keys were not taken by the failed writes: the same items are written now
    seen.append(str(out.append({"index": 2, "text": "x" * 300}, ("index",))))
    seen.append(str(out.append({"text": "y" * 300}, (), b"k" * 16)))
    seen.append(str(out.append({"text": "y" * 300}, (), b"k" * 16)))  # now it is a duplicate
    out.close()
    return seen


def test_a_short_write_is_cut_back_and_its_key_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "limited.jsonl"
    seen = in_child(_write_under_a_size_limit, str(path))
    assert f"cannot write to {path}: EFBIG (File too large) after 100 of" in seen[0]
    assert "partial write was cut back" in seen[0]
    assert seen[1] == "0"  # no torn line left
    assert "EFBIG" in seen[2] and seen[3] == "0"
    assert seen[4:] == ["True", "True", "False"]
    records = read_lines(path)  # every line whole
    assert [r.get("index") for r in records] == [1, 2, None]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs (ENOSPC when full; EROFS once remounted read-only)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_then_read_only_file_system(tmp_path: Path, small_fs: Path) -> None:
    pipeline = make_pipeline(tmp_path, FLEET_OUTPUT=str(small_fs / "%(name)s.jsonl"))
    path = output_of(pipeline)
    ballast = small_fs / "ballast"
    ballast.write_bytes(b"\0" * 16384)
    written = 0
    with pytest.raises(OutputWriteError) as failed:
        for index in range(1000):
            pipeline.process_item(FilmItem(index=index, title="长" * 300))
            written += 1
    assert f"cannot write to {path}: ENOSPC" in str(failed.value)
    assert len(read_lines(path)) == written  # whole lines only
    ballast.unlink()  # the fault is removed: the item that failed is written now
    pipeline.process_item(FilmItem(index=written, title="长" * 300))
    assert [r["index"] for r in read_lines(path)] == list(range(written + 1))

    pipeline.close_spider()

    # Linux refuses to remount a file system read-only while a file on it is open for
    # writing, so EROFS meets the next worker that opens the output
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(OutputWriteError, match=rf"cannot write to {path}: EROFS"):
        make_pipeline(tmp_path, FLEET_OUTPUT=str(small_fs / "%(name)s.jsonl"))
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    resumed = make_pipeline(tmp_path, FLEET_OUTPUT=str(small_fs / "%(name)s.jsonl"))
    resumed.process_item(FilmItem(index=written + 1))
    resumed.close_spider()
    assert len(read_lines(path)) == written + 2


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Make a file immutable (``chattr +i``): even root's writes fail with EPERM."""
    made: list[Path] = []

    def make(path: Path) -> None:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def test_a_file_made_read_only_mid_crawl_raises(tmp_path: Path, immutable: Callable[[Path], None]) -> None:
    pipeline = make_pipeline(tmp_path)
    path = output_of(pipeline)
    pipeline.process_item(FilmItem(index=1))
    immutable(path)
    with pytest.raises(OutputWriteError, match=rf"cannot write to {path}: EPERM"):
        pipeline.process_item(FilmItem(index=2))
    immutable(path.with_name(path.name + ".ledger"))
    with pytest.raises(OutputWriteError, match=rf"{path}.ledger \(the ledger of {path}\): EPERM"):
        pipeline.process_item(request_keyed(pipeline, {"plain": 1}))  # its ledger entry goes first
    subprocess.run(["chattr", "-i", str(path), str(path) + ".ledger"], check=True)
    pipeline.process_item(FilmItem(index=2))  # its key was not taken by the failed write
    assert [r["index"] for r in read_lines(path)] == [1, 2]


# --- a deleted or rotated file is reopened ---


def test_a_deleted_file_is_recreated_not_written_unseen(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)
    path = output_of(pipeline)
    pipeline.process_item(FilmItem(index=1))
    path.unlink()
    pipeline.process_item(FilmItem(index=2))
    assert [r["index"] for r in read_lines(path)] == [2]
    assert pipeline.stats.get_value("fleet/output/reopened") == 1


def test_a_rotated_file_is_reopened_and_reindexed(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)
    other = make_pipeline(tmp_path)  # another process on the same file
    path = output_of(pipeline)
    pipeline.process_item(FilmItem(index=1))
    path.rename(path.with_name("named.jsonl.1"))
    (path.parent / "named.jsonl.ledger").rename(path.with_name("named.jsonl.ledger.1"))
    pipeline.process_item(FilmItem(index=1))  # the new file does not hold it: written again
    pipeline.process_item(FilmItem(index=2))
    with pytest.raises(DropItem):
        other.process_item(FilmItem(index=2))  # the other process follows to the new file
    assert [r["index"] for r in read_lines(path)] == [1, 2]
    assert [r["index"] for r in read_lines(path.with_name("named.jsonl.1"))] == [1]
    # logrotate's copytruncate: copied away, then emptied in place (the same inode)
    os.truncate(path, 0)
    pipeline.process_item(request_keyed(pipeline, {"plain": 1}))
    other.process_item(FilmItem(index=2))  # not a duplicate any more: the file was emptied
    assert read_lines(path) == [{"plain": 1}, {"index": 2}]


# --- exactly once: items without a key of their own are keyed by request and ordinal ---


class Worker:
    """One crawl process's item path: the key middleware and the pipeline, built by Scrapy."""

    def __init__(self, tmp_path: Path, crawl_id: str = "crawl-1") -> None:
        crawler = get_crawler(NamedSpider, {"FLEET_OUTPUT": str(tmp_path / "out" / "%(name)s.jsonl")})
        crawler.spider = crawler._create_spider()
        self.middleware = ItemKeyMiddleware.from_crawler(crawler)
        self.pipeline = JsonLinesPipeline.from_crawler(crawler)
        self.pipeline.open(NamedSpider.name, crawl_id)

    def run_callback(self, url: str, output: list[Any]) -> list[str]:
        """Pass ``output`` through the middleware as a callback's output for ``url``, then
        the items through the pipeline; what became of each item."""
        response = HtmlResponse(url, body=b"<html></html>", request=scrapy.Request(url))

        async def callback() -> Any:
            for obj in output:
                yield obj

        async def collect() -> list[Any]:
            return [o async for o in self.middleware.process_spider_output(response, callback())]

        outcome = []
        for obj in asyncio.run(collect()):
            if isinstance(obj, scrapy.Request):
                continue
            try:
                self.pipeline.process_item(obj)
                outcome.append("written")
            except DropItem:
                outcome.append("dropped")
        return outcome


def test_a_request_run_twice_writes_its_keyless_items_once(tmp_path: Path) -> None:
    worker, resumed = Worker(tmp_path), Worker(tmp_path)  # e.g. frozen past its lease
    page = "http://example.test/page/1"
    first = [{"n": 1}, scrapy.Request("http://example.test/page/2"), {"n": 2}, SiteItem(rank=3)]
    assert worker.run_callback(page, first) == ["written"] * 3
    # the same request again, in another process: its items (new objects) are recognised
    # by their place in the output, even where a value changed since
    again = [{"n": 1}, {"n": 2, "now": "later"}, SiteItem(rank=3), {"n": 4}]
    assert resumed.run_callback(page, again) == ["dropped", "dropped", "dropped", "written"]
    assert worker.run_callback(page, again) == ["dropped"] * 4
    assert worker.run_callback("http://example.test/page/2", first) == ["written"] * 3
    path = output_of(worker.pipeline)
    assert len(read_lines(path)) == 7
    # the keys are in the ledger, not in the lines: the output holds the items only
    assert read_lines(path)[0] == {"n": 1}
    # items that come from no request (start()) have no key and are always written
    worker.pipeline.process_item({"n": 1})
    assert len(read_lines(path)) == 8
    assert len(worker.pipeline.keys) == 0  # no key left behind


def test_keys_survive_a_new_process_and_a_ledger_entry_without_its_line_is_ignored(tmp_path: Path) -> None:
    first = Worker(tmp_path)
    page = "http://example.test/a"
    first.run_callback(page, [{"n": 0}])
    first.pipeline.close_spider()
    ledger = tmp_path / "out" / "named.jsonl.ledger"
    # what a worker killed between the ledger entry and its line leaves: the entry, no line,
    # then one killed in the middle of writing an entry
    fingerprint = get_crawler(NamedSpider).request_fingerprinter.fingerprint(scrapy.Request(page))
    dangling = request_item_key(fingerprint, 1).hex()
    size = (tmp_path / "out" / "named.jsonl").stat().st_size
    with open(ledger, "ab") as f:
        f.write(f"{dangling} {size} 11 0123456789abcdef\n".encode())
        f.write(request_item_key(fingerprint, 2).hex().encode()[:20])
    second = Worker(tmp_path)  # a new process of the same (resumed) crawl
    assert second.run_callback(page, [{"n": 0}, {"n": 1}, {"n": 2}]) == ["dropped", "written", "written"]
    assert second.run_callback(page, [{"n": 0}, {"n": 1}, {"n": 2}]) == ["dropped"] * 3
    third = Worker(tmp_path)  # reads the ledger as the second one left it
    assert third.run_callback(page, [{"n": 0}, {"n": 1}, {"n": 2}]) == ["dropped"] * 3
    assert [r["n"] for r in read_lines(tmp_path / "out" / "named.jsonl")] == [0, 1, 2]
    assert all(len(line.split(" ")) == 4 for line in ledger.read_text().splitlines()[1:])


def test_with_dedupe_off_no_key_is_computed(tmp_path: Path) -> None:
    crawler = get_crawler(NamedSpider, {"FLEET_OUTPUT_DEDUPE": False})
    middleware = ItemKeyMiddleware.from_crawler(crawler)
    JsonLinesPipeline.from_crawler(crawler)
    assert not middleware.keys.enabled


# --- a new crawl starts a new output; a resumed crawl appends ---


def test_a_new_crawl_replaces_the_output_a_resumed_one_appends(tmp_path: Path) -> None:
    first = make_pipeline(tmp_path, crawl_id="a")
    first.process_item(FilmItem(index=1))
    first.close_spider()
    resumed = make_pipeline(tmp_path, crawl_id="a")
    resumed.process_item(FilmItem(index=2))
    resumed.close_spider()
    path = tmp_path / "out" / "named.jsonl"
    assert [r["index"] for r in read_lines(path)] == [1, 2]
    new = make_pipeline(tmp_path, crawl_id="b")
    assert path.read_bytes() == b""
    new.process_item(FilmItem(index=1))  # not a duplicate of the last crawl's line
    new.close_spider()
    assert [r["index"] for r in read_lines(path)] == [1]
    assert new.stats.get_value("fleet/output/new_crawl_truncated") == 1
    # a worker that joined a finished crawl has no id: it leaves the output as it is
    make_pipeline(tmp_path, crawl_id=None).close_spider()
    assert [r["index"] for r in read_lines(path)] == [1]


def test_without_the_fleet_every_run_is_a_new_crawl(tmp_path: Path) -> None:
    for run in range(2):
        crawler = get_crawler(NamedSpider, {"FLEET_OUTPUT": str(tmp_path / "%(name)s.jsonl")})
        crawler.spider = crawler._create_spider()
        pipeline = JsonLinesPipeline.from_crawler(crawler)
        pipeline.open_spider()  # no fleet scheduler on this crawler
        pipeline.process_item({"run": run})
        pipeline.close_spider()
    assert read_lines(tmp_path / "named.jsonl") == [{"run": 1}]


def test_output_append_keeps_the_last_crawls_lines(tmp_path: Path) -> None:
    for crawl_id in ("a", "b"):
        pipeline = make_pipeline(tmp_path, crawl_id=crawl_id, FLEET_OUTPUT_APPEND=True)
        pipeline.process_item(request_keyed(pipeline, {"crawl": crawl_id}))  # the same request
        pipeline.close_spider()
    assert read_lines(tmp_path / "out" / "named.jsonl") == [{"crawl": "a"}, {"crawl": "b"}]


def _new_crawl_writer(path: str, writer: int, barrier: Any, first_line: Any) -> None:
    if writer % 2:
        first_line.wait(60)  # half open only once the new crawl's lines are there
    else:
        barrier.wait()  # the other half open all at once
    out = JsonLinesFile(Path(path), crawl_id="new")
    out.open()
    for n in range(300):
        out.append({"writer": writer, "n": n}, (), request_item_key(b"%d" % writer, n))
        first_line.set()
    out.close()


def test_the_processes_of_a_new_crawl_empty_the_output_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    old = JsonLinesFile(path, crawl_id="old")
    old.open()
    for n in range(50):
        old.append({"old": n}, (), request_item_key(b"x", n))
    old.close()
    ctx = multiprocessing.get_context("fork")
    barrier, first_line = ctx.Barrier(3), ctx.Event()
    procs = [ctx.Process(target=_new_crawl_writer, args=(str(path), w, barrier, first_line)) for w in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    records = read_lines(path)
    assert not any("old" in r for r in records)
    assert sorted((r["writer"], r["n"]) for r in records) == [(w, n) for w in range(6) for n in range(300)]
