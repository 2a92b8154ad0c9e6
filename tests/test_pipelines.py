"""The JSON-lines pipeline: whole lines from many processes, UTF-8 as is, dedupe by declared key."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

try:
    import webserver  # noqa: F401 - puts the repo on sys.path
except ImportError:  # tests/ is a package
    from tests import webserver  # noqa: F401

import scrapy
from scrapy.exceptions import DropItem
from scrapy.utils.test import get_crawler

from scrapy_fleet.items import FilmItem, LinkedPageItem, SiteItem
from scrapy_fleet.pipelines import JsonLinesFile, JsonLinesPipeline, dedupe_fields


class NamedSpider(scrapy.Spider):
    name = "named"


def make_pipeline(tmp_path: Path, **settings: object) -> JsonLinesPipeline:
    crawler = get_crawler(NamedSpider, {"FLEET_OUTPUT": str(tmp_path / "out" / "%(name)s.jsonl"), **settings})
    crawler.spider = crawler._create_spider()
    pipeline = JsonLinesPipeline.from_crawler(crawler)
    pipeline.open_spider()
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
