"""The JSON-lines item pipeline: one file per spider, shared by every process.

Each item becomes one UTF-8 JSON object on one line (non-ASCII kept as is).
Several processes may append to the same file at once:

* the file is opened with ``O_APPEND`` and each line goes out whole, under an exclusive
  ``flock`` on the file, so lines are never interleaved and nothing sits in a buffer; a
  write that fails part-way is cut back (``ftruncate``) before the lock is released, so
  the file never holds a torn line, and raises :class:`OutputWriteError` (a
  :class:`~scrapy_fleet.errors.FatalItemError`: the worker stops, the item's request is
  not acknowledged and runs again later);
* before each write, under the lock, the path is checked to still name the open file: a
  deleted or rotated file is reopened (and re-indexed), never written to unseen;
* the file itself is the ledger of what was written: before writing, a process reads the
  lines the others appended since it last looked (still under the lock) and drops an item
  whose ``dedupe_key`` value is already in the file;
* an item without a key of its own but with a request key (``scrapy_fleet.itemkeys``) is
  recorded in a side file, ``<output>.ledger``, write-ahead: the entry (key, offset,
  length and digest of the line) goes out before the line, and counts only if that very
  line is in the output. So a key survives any crash together with its line, and the
  output holds nothing but the items;
* the ledger's first line names the crawl the output belongs to: a new crawl (another id)
  empties the output once, under the lock, before its first line; a resumed crawl appends.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import DropItem
from scrapy.utils.serialize import ScrapyJSONEncoder

from scrapy_fleet.errors import FatalItemError
from scrapy_fleet.frontier.scheduler import FleetScheduler
from scrapy_fleet.itemkeys import ItemKeys

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "output/%(name)s.jsonl"
LEDGER_SUFFIX = ".ledger"
_READ_CHUNK = 1 << 20
_LEDGER_MAGIC = b"scrapy-fleet-ledger 1 crawl="
_REOPEN_TRIES = 5  # a path replaced again and again while we reopen it is a fault


class OutputWriteError(FatalItemError):
    """A line (or its ledger entry) could not be written: names the file and the OS error."""

    def __init__(self, path: Path, error: OSError | str, detail: str = "", output: Path | None = None) -> None:
        self.path = output or path  # the output file, also when its ledger failed
        if isinstance(error, OSError):
            code = errno.errorcode.get(error.errno or 0, str(error.errno))
            error = f"{code} ({error.strerror or error})"
        where = f"{path} (the ledger of {output})" if output is not None and output != path else str(path)
        super().__init__(f"cannot write to {where}: {error}{detail}")


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


def _line_digest(line: bytes) -> bytes:
    return hashlib.blake2b(line, digest_size=8).digest()


def _crawl_tag(crawl_id: str) -> bytes:
    """The crawl id as the ledger header holds it: as is if short and plain, else a digest."""
    raw = crawl_id.encode("utf-8", "backslashreplace")
    if 0 < len(raw) <= 128 and raw.isascii() and raw.replace(b"-", b"").replace(b"_", b"").isalnum():
        return raw
    return hashlib.blake2b(raw, digest_size=16).hexdigest().encode()


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _names(path: str, ident: tuple[int, int]) -> bool:
    """Whether ``path`` still names the file ``ident`` (a str: faster to stat than a Path)."""
    try:
        return _identity(os.stat(path)) == ident
    except FileNotFoundError:
        return False


def _open_in_place_of(path: Path, old: int | None) -> tuple[int, tuple[int, int]]:
    """Open ``path`` for appending, closing ``old``; the new fd and its (st_dev, st_ino)."""
    # O_CREAT makes the file, never its directory: a directory gone mid-crawl is a fault
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if old is not None:
        os.close(old)
    return fd, _identity(os.fstat(fd))


class JsonLinesFile:
    """An append-only JSON-lines file that several processes write, with dedupe by key.

    ``crawl_id``: the crawl this process writes for. An output recorded for another crawl
    is emptied by :meth:`open` (unless ``keep_across_crawls``); None means unknown (a
    worker that joined a finished crawl): the output is left as it is.
    """

    def __init__(
        self,
        path: Path,
        dedupe: bool = True,
        crawl_id: str | None = None,
        keep_across_crawls: bool = False,
        stats: StatsCollector | None = None,
    ) -> None:
        self.path = path
        self.ledger_path = path.with_name(path.name + LEDGER_SUFFIX)
        self._path_str, self._ledger_str = os.fspath(path), os.fspath(self.ledger_path)
        self.dedupe = dedupe
        self.crawl_tag = _crawl_tag(crawl_id) if crawl_id is not None else None
        self.keep_across_crawls = keep_across_crawls
        self.stats = stats
        self._encoder = ScrapyJSONEncoder(ensure_ascii=False)
        self._fd: int | None = None
        self._ident = (0, 0)
        self._ledger_fd: int | None = None
        self._ledger_ident = (0, 0)
        self._reopened = False  # a path named another file: settle before the next write
        self._reset_index()

    def _reset_index(self) -> None:
        self._read_pos = 0  # bytes of the output already indexed
        self._key_sets: dict[tuple[str, ...], set[bytes]] = {}
        self._request_keys: set[bytes] | None = None  # read from the ledger on first use
        self._ledger_pos = 0  # bytes of the ledger already read
        self._seen_size = 0  # the output's size when we last looked: it only grows

    # --- opening ----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open_output()
            self._open_ledger()
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # type: ignore[arg-type]
            try:
                self._settle(initial=True)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]
        except OSError as exc:
            self.close()
            raise OutputWriteError(self.path, exc) from exc

    def _open_output(self) -> None:
        self._fd, self._ident = _open_in_place_of(self.path, self._fd)

    def _open_ledger(self) -> None:
        self._ledger_fd, self._ledger_ident = _open_in_place_of(self.ledger_path, self._ledger_fd)

    def _settle(self, initial: bool) -> None:
        """Under the lock, after (re)opening: claim the output for this crawl, end a torn line."""
        assert self._fd is not None and self._ledger_fd is not None
        size = os.fstat(self._fd).st_size
        recorded = self._recorded_crawl()
        if self.crawl_tag is None:
            pass  # a worker that joined a finished crawl claims nothing
        elif recorded != self.crawl_tag:
            if initial and size and not self.keep_across_crawls:
                # a new crawl: its lines replace the last one's (Scrapy's -O). The output is
                # emptied before the ledger gets this crawl's header, so a crash in between
                # leaves no header of ours and the next process empties it again
                os.ftruncate(self._fd, 0)
                logger.info(
                    "New crawl %s: emptied %s (%d bytes of crawl %s)", self.crawl_tag.decode(),
                    self.path, size, (recorded or b"unknown").decode("ascii", "replace"),
                )
                self._inc("fleet/output/new_crawl_truncated")
                size = 0
            self._reset_ledger()  # the last crawl's request keys mean nothing to this one
        elif size == 0 and os.fstat(self._ledger_fd).st_size > len(self._header()):
            self._reset_ledger()  # no entry can name a line of an empty (rotated) output
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            # a line cut short by a crash must not swallow the next one
            self._write_whole(self._fd, b"\n", self.path)
        self._reset_index()

    def _header(self) -> bytes:
        return _LEDGER_MAGIC + self.crawl_tag + b"\n" if self.crawl_tag is not None else b""

    def _recorded_crawl(self) -> bytes | None:
        assert self._ledger_fd is not None
        first = os.pread(self._ledger_fd, len(_LEDGER_MAGIC) + 130, 0).split(b"\n", 1)
        if len(first) < 2 or not first[0].startswith(_LEDGER_MAGIC):
            return None
        return first[0][len(_LEDGER_MAGIC):]

    def _reset_ledger(self) -> None:
        assert self._ledger_fd is not None
        os.ftruncate(self._ledger_fd, 0)
        header = self._header()
        if header:
            self._write_whole(self._ledger_fd, header, self.ledger_path)

    def close(self) -> None:
        for name in ("_fd", "_ledger_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    # --- writing ----------------------------------------------------------------------

    def encode(self, record: dict[str, Any]) -> bytes:
        # json escapes \n inside strings, so the only newline is the terminator;
        # a lone surrogate becomes the JSON escape \udcxx instead of invalid UTF-8.
        return (self._encoder.encode(record) + "\n").encode("utf-8", "backslashreplace")

    def append(
        self, record: dict[str, Any], fields: tuple[str, ...] = (), request_key: bytes | None = None
    ) -> bool:
        """Write ``record`` as one line; False if its key is already in the file.

        Its key is its ``fields`` values if it has them all, else ``request_key`` (kept
        in the ledger). Raises :class:`OutputWriteError` if the line cannot be written.
        """
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not open")
        line = self.encode(record)
        digest = key_digest(fields, record) if self.dedupe and fields else None
        if digest is not None or not self.dedupe:
            request_key = None
        try:
            self._lock(ledger=request_key is not None)
            try:
                return self._append_locked(line, fields, digest, request_key)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError as exc:  # reading, locking, reopening: the writes raise their own
            raise OutputWriteError(self.path, exc) from exc

    def _append_locked(
        self, line: bytes, fields: tuple[str, ...], digest: bytes | None, request_key: bytes | None
    ) -> bool:
        assert self._fd is not None and self._ledger_fd is not None
        keys = request_keys = None
        start = 0
        if digest is not None or request_key is not None:
            start = os.fstat(self._fd).st_size
            if start < self._seen_size:
                # emptied in place (logrotate's copytruncate): what we indexed is gone
                logger.warning("%s was truncated; reading it again", self.path)
                self._inc("fleet/output/reopened")
                self._settle(initial=False)
                start = os.fstat(self._fd).st_size
            self._seen_size = start
        if digest is not None:
            keys = self._keys_for(fields)
            self._catch_up(start)
            if digest in keys:
                return False
        if request_key is not None:
            request_keys = self._caught_up_request_keys()
            if request_key in request_keys:
                return False
        entry = b""
        if request_key is not None:
            # write-ahead: an entry whose line never made it names bytes that are not there
            entry = b"%s %d %d %s\n" % (
                request_key.hex().encode(), start, len(line), _line_digest(line).hex().encode()
            )
            self._write_whole(self._ledger_fd, entry, self.ledger_path)
        try:
            self._write_whole(self._fd, line, self.path)
        except OutputWriteError:
            if entry:
                self._cut(self._ledger_fd, len(entry))
            raise
        # only now, with the line on disk, is the key taken
        if keys is not None and digest is not None:
            keys.add(digest)
            self._read_pos = start + len(line)  # caught up just before: our own line needs no re-reading
        if request_keys is not None and request_key is not None:
            request_keys.add(request_key)
            self._ledger_pos += len(entry)
        if keys is not None or request_keys is not None:
            self._seen_size = start + len(line)
        return True

    def _write_whole(self, fd: int, data: bytes, path: Path) -> None:
        """Append ``data`` whole or not at all (under the lock: nobody else appends)."""
        done = 0
        try:
            done = os.write(fd, data)  # nearly always all of it
            while done < len(data):
                written = os.write(fd, memoryview(data)[done:])
                if written <= 0:
                    raise OSError(errno.EIO, "the write stored nothing")
                done += written  # a short write: the next one says why (ENOSPC, EFBIG)
        except OSError as exc:
            self._inc("fleet/output/write_errors")
            detail = ""
            if done:
                detail = f" after {done} of {len(data)} bytes; " + (
                    self._cut(fd, done) or "the partial write was cut back"
                )
            raise OutputWriteError(path, exc, detail, output=self.path) from exc

    def _cut(self, fd: int, tail: int) -> str:
        """Truncate the last ``tail`` bytes away; a message if that fails too."""
        try:
            os.ftruncate(fd, os.fstat(fd).st_size - tail)
        except OSError as exc:
            # the next open ends the torn line with a newline; its ledger entry never matches
            return f"the partial write could not be cut back ({exc})"
        return ""

    def _lock(self, ledger: bool) -> None:
        """Lock the file the path names now, reopening a deleted or rotated one (and the
        ledger, if ``ledger``: this write uses it)."""
        assert self._fd is not None
        for _ in range(_REOPEN_TRIES):
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            if _names(self._path_str, self._ident):
                break
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            logger.warning("%s was deleted or replaced; reopening it", self.path)
            self._inc("fleet/output/reopened")
            self._open_output()  # a directory gone raises here
            self._reopened = True
        else:
            raise OutputWriteError(self.path, "it was replaced again each time it was reopened")
        try:
            # the ledger is checked when it is used, and when the output changed under us
            if (ledger or self._reopened) and not _names(self._ledger_str, self._ledger_ident):
                logger.warning("%s was deleted or replaced; reopening it", self.ledger_path)
                self._open_ledger()
                self._reopened = True
            if self._reopened:
                self._reopened = False
                self._settle(initial=False)  # re-index from the files the paths name now
        except BaseException:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            raise

    # --- reading what is already there ------------------------------------------------

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

    def _catch_up(self, size: int) -> None:
        """Index the lines appended (by any process) since we last looked, up to ``size``."""
        if size <= self._read_pos:
            return
        for record in self._records(self._read_pos, size):
            for fields, keys in self._key_sets.items():
                digest = key_digest(fields, record)
                if digest is not None:
                    keys.add(digest)
        self._read_pos = size

    def _caught_up_request_keys(self) -> set[bytes]:
        """The request keys whose lines are in the output, with the entries added since."""
        assert self._fd is not None and self._ledger_fd is not None
        if self._request_keys is None:
            self._request_keys, self._ledger_pos = set(), 0
        size = os.fstat(self._ledger_fd).st_size
        pos = self._ledger_pos
        for raw, complete in _lines(self._ledger_fd, pos, size):
            if not complete:
                # its writer died writing it, so before writing its line: drop it, or the
                # next entry would be glued to it
                os.ftruncate(self._ledger_fd, pos)
                break
            pos += len(raw) + 1
            parsed = _parse_entry(raw)
            if parsed is not None:
                key, offset, length, line_digest = parsed
                line = os.pread(self._fd, length, offset)
                if len(line) == length and line.endswith(b"\n") and _line_digest(line) == line_digest:
                    self._request_keys.add(key)
        self._ledger_pos = pos
        return self._request_keys

    def _records(self, start: int, end: int) -> Iterator[dict[str, Any]]:
        """Yield the JSON objects of the lines in bytes [start, end)."""
        assert self._fd is not None
        for raw, _complete in _lines(self._fd, start, end):
            # a last line without newline (e.g. a file cut by a crash) is read too
            record = _load_line(raw)
            if record is not None:
                yield record

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)


def _lines(fd: int, start: int, end: int) -> Iterator[tuple[bytes, bool]]:
    """Yield (line without its newline, whether it had one) for bytes [start, end) of fd."""
    pending = b""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(_READ_CHUNK, end - pos), pos)
        if not chunk:
            break
        pos += len(chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            yield raw, True
    if pending:
        yield pending, False


def _parse_entry(raw: bytes) -> tuple[bytes, int, int, bytes] | None:
    """A ledger entry: ``<key hex> <offset> <length> <line digest hex>``; None if not one."""
    parts = raw.split(b" ")
    if len(parts) != 4:
        return None
    try:
        return bytes.fromhex(parts[0].decode()), int(parts[1]), int(parts[2]), bytes.fromhex(parts[3].decode())
    except ValueError:
        return None


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

    Settings: ``FLEET_OUTPUT`` (str, ``%(name)s`` is the spider name),
    ``FLEET_OUTPUT_DEDUPE`` (bool, default True: drop an item whose key is already in
    the file) and ``FLEET_OUTPUT_APPEND`` (bool, default False: a new crawl appends to
    the last crawl's output instead of replacing it).
    """

    def __init__(
        self,
        output: str = DEFAULT_OUTPUT,
        dedupe: bool = True,
        stats: StatsCollector | None = None,
        append: bool = False,
        keys: ItemKeys | None = None,
    ) -> None:
        self.output = output
        self.dedupe = dedupe
        self.stats = stats
        self.append = append
        self.keys = keys
        if keys is not None and dedupe:
            keys.enable()  # the middleware computes keys only for a consumer
        self.crawler: Crawler | None = None
        self.file: JsonLinesFile | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> JsonLinesPipeline:
        pipeline = cls(
            output=crawler.settings.get("FLEET_OUTPUT") or DEFAULT_OUTPUT,
            dedupe=crawler.settings.getbool("FLEET_OUTPUT_DEDUPE", True),
            stats=crawler.stats,
            append=crawler.settings.getbool("FLEET_OUTPUT_APPEND", False),
            keys=ItemKeys.of(crawler),
        )
        pipeline.crawler = crawler
        return pipeline

    def output_path(self, spider_name: str) -> Path:
        return Path(self.output % {"name": spider_name})

    def open_spider(self) -> None:
        assert self.crawler is not None and self.crawler.spider is not None
        scheduler = FleetScheduler.of(self.crawler)
        # Scrapy opens the scheduler first, so a fleet crawl's id is known by now; None
        # there means this worker joined a finished crawl. Without the fleet, every run
        # is a new crawl.
        crawl_id = scheduler.crawl_id if scheduler is not None else uuid.uuid4().hex
        self.open(self.crawler.spider.name, crawl_id)

    def open(self, spider_name: str, crawl_id: str | None) -> None:
        self.file = JsonLinesFile(
            self.output_path(spider_name), dedupe=self.dedupe, crawl_id=crawl_id,
            keep_across_crawls=self.append, stats=self.stats,
        )
        self.file.open()
        logger.info("Writing items to %s (crawl %s)", self.file.path, crawl_id)

    def close_spider(self) -> None:
        if self.file is not None:
            self.file.close()
            logger.info("Closed %s", self.file.path)

    def process_item(self, item: Any) -> Any:
        assert self.file is not None
        record = ItemAdapter(item).asdict()
        request_key = self.keys.pop(item) if self.keys is not None else None
        if not self.file.append(record, dedupe_fields(item), request_key):
            self._inc("fleet/output/duplicates_dropped")
            raise DropItem(f"already in {self.file.path}: {_describe_key(item, record)}")
        self._inc("fleet/output/items_written")
        return item

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)


def _describe_key(item: Any, record: dict[str, Any]) -> str:
    fields = dedupe_fields(item)
    if fields and key_digest(fields, record) is not None:
        return ", ".join(f"{name}={record.get(name)!r}" for name in fields)
    return "an item of the same request, at the same place in its callback's output"
