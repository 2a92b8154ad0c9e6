"""Reading a top-sites list (Alexa / Tranco ``rank,domain`` CSV, plain or zipped).

The list is streamed: :func:`iter_list` yields one :class:`TopSite` or
:class:`SkippedRow` per line and never holds more than the set of domains
already seen (to drop duplicates).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import idna
from w3lib.url import safe_url_string


DEFAULT_LIST_URL = "https://tranco-list.eu/top-1m.csv.zip"

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._~!$&'()*+,;=:@%-]*$")


@dataclass(frozen=True, slots=True)
class TopSite:
    """One valid list row: where to start crawling a listed site."""

    rank: int
    domain: str  # IDNA host (with :port if the row had one) plus the row's path
    url: str  # http://<host>/<path>
    line_no: int


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row that is not crawled, and why."""

    line_no: int
    reason: str  # blank, header, bad rank, bad domain, duplicate, ...
    raw: str


class BadRow(ValueError):
    """Raised by :func:`parse_row` with a short reason."""


def normalize_host(host: str) -> str:
    """Return the ASCII (IDNA) form of ``host`` or raise :class:`BadRow`.

    Accepts dotted IPv4 addresses, punycode and Unicode names. Names need at
    least two labels, letters/digits/hyphens only, and a non-numeric TLD.
    """
    host = host.strip().rstrip(".")
    if not host:
        raise BadRow("empty domain")
    try:
        ipaddress.IPv4Address(host)
        return host
    except ValueError:
        pass
    if host.isascii():  # the common case, fast: IDNA of an ASCII name is its lower case
        ascii_host = host.lower()
    else:
        try:
            ascii_host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise BadRow(f"bad domain ({exc.__class__.__name__})") from None
    labels = ascii_host.split(".")
    if len(labels) < 2 or len(ascii_host) > 253:
        raise BadRow("bad domain")
    if not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise BadRow("bad domain")
    for label in labels:
        if label.startswith("xn--"):
            try:  # punycode must decode to a valid Unicode label
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise BadRow("bad punycode") from None
    return ascii_host


def parse_row(line: str) -> tuple[int, str, str]:
    """Parse one ``rank,domain[/path]`` row into ``(rank, domain, url)``.

    Raises :class:`BadRow` with a short reason for anything else.
    """
    text = line.replace("\ufeff", "").strip()
    if not text:
        raise BadRow("blank")
    fields = text.split(",")
    if len(fields) != 2:
        raise BadRow("not rank,domain")
    rank_text, entry = fields[0].strip(), fields[1].strip()
    if not rank_text.isdigit() or not rank_text.isascii():
        raise BadRow("bad rank")
    rank = int(rank_text)
    if rank < 1:
        raise BadRow("bad rank")
    if not entry:
        raise BadRow("empty domain")
    if "://" in entry or len(entry.split()) != 1:
        raise BadRow("bad domain")
    hostport, slash, path = entry.partition("/")
    host, colon, port = hostport.partition(":")
    host = normalize_host(host)
    if colon:
        if not _PORT.match(port) or not 0 < int(port) < 65536:
            raise BadRow("bad port")
        host = f"{host}:{int(port)}"
    path = f"/{path}" if slash else ""
    url = f"http://{host}{path or '/'}"
    if path and not _SAFE_PATH.match(path):
        url = safe_url_string(url)  # percent-encode what a URL cannot carry as is
    return rank, f"{host}{path}", url


def iter_rows(lines: Iterable[str]) -> Iterator[TopSite | SkippedRow]:
    """Yield each line of a list as a :class:`TopSite` or a :class:`SkippedRow`.

    A first line whose rank is not a number is a header. A domain seen before
    (same host and path) is a duplicate.
    """
    seen: set[bytes] = set()
    for line_no, line in enumerate(lines, start=1):
        raw = line.rstrip("\r\n")
        try:
            rank, domain, url = parse_row(raw)
        except BadRow as exc:
            reason = str(exc)
            if line_no == 1 and reason in ("bad rank", "not rank,domain"):
                reason = "header"
            yield SkippedRow(line_no, reason, raw)
            continue
        key = hashlib.blake2b(domain.encode(), digest_size=12).digest()
        if key in seen:
            yield SkippedRow(line_no, "duplicate", raw)
            continue
        seen.add(key)
        yield TopSite(rank, domain, url, line_no)


def open_list_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield the text lines of a local ``.csv`` or ``.zip`` list, lazily.

    A zip is read through its first ``.csv`` member (or its only member).
    Bytes that are not UTF-8 are replaced, so a garbage row is only a bad row.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            csvs = [n for n in names if n.lower().endswith(".csv")] or names
            if not csvs:
                raise ValueError(f"{path}: empty zip archive")
            with archive.open(csvs[0]) as member:
                yield from io.TextIOWrapper(member, encoding="utf-8-sig", errors="replace", newline="")
        return
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        yield from handle


def is_remote(location: str) -> bool:
    """Whether ``location`` is a URL to download (http, https, file)."""
    return urlparse(location).scheme in ("http", "https", "file")


def cache_path(url: str, data_dir: str | os.PathLike[str]) -> Path:
    """Where a downloaded list is kept in the data directory."""
    name = os.path.basename(urlparse(url).path) or "list"
    digest = hashlib.sha1(url.encode()).hexdigest()[:10]
    return Path(data_dir) / "lists" / f"{digest}-{name}"


def store_download(body: bytes, target: Path) -> Path:
    """Write a downloaded list atomically (temp file, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    tmp.write_bytes(body)
    os.replace(tmp, target)
    return target
