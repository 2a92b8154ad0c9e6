"""The JSON-lines item pipeline: one file per spider, shared by every process.

Each item becomes one UTF-8 JSON object on one line (non-ASCII kept as is).
Several processes may append to the same file at once:

* the file is opened with ``O_APPEND`` and each line goes out in a single
  ``os.write`` of the whole encoded line, under an exclusive ``flock`` on the
  file, so lines are never interleaved or torn and nothing sits in a buffer;
* the file itself is the ledger of what was written: before writing, a process
  reads the lines the others appended since it last looked (still under the
  lock) and drops an item whose ``dedupe_key`` value is already in the file.
  So a crawl re-run after a crash, which repeats the requests that were in
  flight, does not duplicate their items, whichever process writes them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem
from scrapy.utils.serialize import ScrapyJSONEncoder

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "output/%(name)s.jsonl"
_READ_CHUNK = 1 << 20


def dedupe_fields(item: Any) -> tuple[str, ...]:
    """The field names an item declares as its identity (class attribute ``dedupe_key``)."""
    key = getattr(type(item), "dedupe_key", None)
    if not key:
        return ()
    return (key,) if isinstance(key, str) else tuple(key)


def key_digest(fields: tuple[str, ...], record: dict[str, Any]) -> bytes | None:
    """A compact digest of ``record``'s values for ``fields``; None if any is missing."""
    values = []
    for name in fields:
        value = record.get(name)
        if value is None:
            return None
        values.append(value)
    text = json.dumps([list(fields), values], ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8", "backslashreplace"), digest_size=16).digest()


class JsonLinesFile:
    """An append-only JSON-lines file that several processes write, with dedupe by key."""

    def __init__(self, path: Path, dedupe: bool = True) -> None:
        self.path = path
        self.dedupe = dedupe
        self._encoder = ScrapyJSONEncoder(ensure_ascii=False)
        self._fd: int | None = None
        self._read_pos = 0  # bytes of the file already indexed
        self._key_sets: dict[tuple[str, ...], set[bytes]] = {}

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:  # a line cut short by a crash must not swallow the next one
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                self._write_all(b"\n")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def encode(self, record: dict[str, Any]) -> bytes:
        # json escapes \n inside strings, so the only newline is the terminator;
        # a lone surrogate becomes the JSON escape \udcxx instead of invalid UTF-8.
        return (self._encoder.encode(record) + "\n").encode("utf-8", "backslashreplace")

    def append(self, record: dict[str, Any], fields: tuple[str, ...] = ()) -> bool:
        """Write ``record`` as one line; False if its key is already in the file."""
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not open")
        line = self.encode(record)
        digest = key_digest(fields, record) if self.dedupe and fields else None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if digest is not None:
                keys = self._keys_for(fields)
                self._catch_up()
                if digest in keys:
                    return False
                keys.add(digest)
            self._write_all(line)
            if digest is not None:
                self._read_pos += len(line)  # caught up just before: our own line needs no re-reading
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return True

    def _write_all(self, line: bytes) -> None:
        assert self._fd is not None
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk; never leave half a line unterminated
            raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")

    def _keys_for(self, fields: tuple[str, ...]) -> set[bytes]:
        """The key set for ``fields``, built from the whole file the first time."""
        keys = self._key_sets.get(fields)
        if keys is None:
            keys = self._key_sets[fields] = set()
            for record in self._records(0, self._read_pos):  # the rest is read by _catch_up()
                digest = key_digest(fields, record)
                if digest is not None:
                    keys.add(digest)
        return keys

    def _catch_up(self) -> None:
        """Index the lines appended (by any process) since we last looked."""
        size = os.fstat(self._fd).st_size  # type: ignore[arg-type]
        if size <= self._read_pos:
            return
        for record in self._records(self._read_pos, size):
            for fields, keys in self._key_sets.items():
                digest = key_digest(fields, record)
                if digest is not None:
                    keys.add(digest)
        self._read_pos = size

    def _records(self, start: int, end: int) -> Any:
        """Yield the JSON objects of the complete lines in bytes [start, end)."""
        assert self._fd is not None
        pending = b""
        pos = start
        while pos < end:
            chunk = os.pread(self._fd, min(_READ_CHUNK, end - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                record = _load_line(raw)
                if record is not None:
                    yield record
        if pending:  # a last line without newline (e.g. a file cut by a crash)
            record = _load_line(pending)
            if record is not None:
                yield record


def _load_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class JsonLinesPipeline:
    """Write every item of a spider to ``FLEET_OUTPUT`` (default ``output/%(name)s.jsonl``).

    Settings: ``FLEET_OUTPUT`` (str, ``%(name)s`` is the spider name) and
    ``FLEET_OUTPUT_DEDUPE`` (bool, default True: drop an item whose
    ``dedupe_key`` is already in the file).
    """

    def __init__(self, output: str = DEFAULT_OUTPUT, dedupe: bool = True, stats: StatsCollector | None = None) -> None:
        self.output = output
        self.dedupe = dedupe
        self.stats = stats
        self.crawler: Crawler | None = None
        self.file: JsonLinesFile | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JsonLinesPipeline:
        pipeline = cls(
            output=crawler.settings.get("FLEET_OUTPUT") or DEFAULT_OUTPUT,
            dedupe=crawler.settings.getbool("FLEET_OUTPUT_DEDUPE", True),
            stats=crawler.stats,
        )
        pipeline.crawler = crawler
        return pipeline

    def output_path(self, spider_name: str) -> Path:
        return Path(self.output % {"name": spider_name})

    def open_spider(self) -> None:
        assert self.crawler is not None and self.crawler.spider is not None
        self.file = JsonLinesFile(self.output_path(self.crawler.spider.name), dedupe=self.dedupe)
        self.file.open()
        logger.info("Writing items to %s", self.file.path)

    def close_spider(self) -> None:
        if self.file is not None:
            self.file.close()
            logger.info("Closed %s", self.file.path)

    def process_item(self, item: Any) -> Any:
        assert self.file is not None
        record = ItemAdapter(item).asdict()
        if not self.file.append(record, dedupe_fields(item)):
            self._inc("fleet/output/duplicates_dropped")
            raise DropItem(f"already in {self.file.path}: {_describe_key(item, record)}")
        self._inc("fleet/output/items_written")
        return item

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)


def _describe_key(item: Any, record: dict[str, Any]) -> str:
    return ", ".join(f"{name}={record.get(name)!r}" for name in dedupe_fields(item))
