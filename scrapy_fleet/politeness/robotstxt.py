"""What the fleet keeps of a robots.txt: the groups for the crawl's user agents, capped.

Every worker parses the stored text with ROBOTSTXT_PARSER, and asks it only about the
crawl's own user agents. So the fleet keeps just the groups (``User-agent`` lines and
their rules) that can apply to one of them: the ``*`` group and every group naming a
token found in one of the agents (the loosest match of the parsers Scrapy ships). It drops
the groups for other crawlers, comments, ``Sitemap``/``Host`` lines and rules outside any
group. The kept lines are the original bytes, stripped of comments and outer whitespace.
Empty lines stay where they were (collapsed), because Python's RobotFileParser ends a group
at an empty line.

On real files this removes most of the text: the median robots.txt of popular sites is
about 560 bytes, and a large one is mostly groups for other bots.

Two limits cut the text, the way Google cuts a file: rules after the limit are ignored.
The first 512 KiB of the download are read, as before. Then the kept text is cut to
FLEET_ROBOTS_MAX_BYTES at a line boundary, so a half rule never shows up as a whole one.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_READ_BYTES = 512 * 1024  # what Google reads of a robots.txt; the rest is ignored

# Protego's spellings: "User-agent:", "User agent:", "Useragent:", and without the colon
_USER_AGENT = re.compile(rb"user(?:-|\s*)agent(?:\s*:\s*|\s+|$)(.*)", re.IGNORECASE)
# site-wide lines: they belong to no group, and Protego's grouping skips them too
_SITE_WIDE = re.compile(rb"(?:sitemaps?|site-map|host)(?:\s*:|\s)", re.IGNORECASE)
# words a rule may start with when it has no colon (Protego reads "Disallow /x")
_RULE_WORDS = (b"allow", b"disallow", b"crawl-delay", b"crawl", b"request-rate", b"request",
               b"visit-time", b"visit")


@dataclass(frozen=True)
class CompactRobots:
    body: bytes
    truncated: bool  # rules were cut: by the 512 KiB read limit or by the stored-size cap


def compact_robots(body: bytes, agents: Iterable[str], max_bytes: int) -> CompactRobots:
    """The groups of ``body`` that may apply to one of ``agents``, at most ``max_bytes``."""
    truncated = False
    if len(body) > MAX_READ_BYTES:
        body = _cut(body, MAX_READ_BYTES)
        truncated = True
    if body.startswith(codecs.BOM_UTF8):
        body = body[len(codecs.BOM_UTF8):]
    wanted = [a.strip().lower() for a in agents if a and a.strip()]

    groups: list[list[bytes]] = []
    current: list[bytes] | None = None
    keep = False  # the current group names one of our agents
    in_agents = False  # the last directive was a User-agent line
    for raw in body.splitlines():
        if not raw:  # an empty line (not one of blanks or a comment)
            if current is not None and current and current[-1] != b"":
                current.append(b"")
            continue
        line = raw.split(b"#", 1)[0].strip()
        if not line:
            continue
        agent = _USER_AGENT.match(line)
        if agent is not None:
            if current is None or not in_agents:  # a User-agent after rules starts a group
                if current is not None and keep:
                    groups.append(current)
                current, keep = [], False
            in_agents = True
            if _applies(agent.group(1), wanted):
                current.append(line)
                keep = True
            continue
        if _SITE_WIDE.match(line) or not _is_directive(line):
            continue
        in_agents = False
        if current is not None:  # a rule before any User-agent applies to nobody
            current.append(line)
    if current is not None and keep:
        groups.append(current)

    text = b"\n\n".join(b"\n".join(_trim(group)) for group in groups)
    out = text + b"\n" if text else b""
    if len(out) > max_bytes:
        out = _cut(out, max_bytes)
        truncated = True
    return CompactRobots(out, truncated)


def _applies(value: bytes, wanted: list[str]) -> bool:
    """Whether a group's agent may be one of ours, for any of Scrapy's parsers."""
    # decoded as Scrapy does for the parsers (invalid UTF-8 ignored: "*\xa0" reads "*")
    token = value.decode("utf-8", "ignore").strip().lower()
    if token in ("*", ""):  # "": RobotFileParser takes an empty agent for everybody
        return True
    token = token.replace("*", "")  # Protego drops wildcards in agent names
    return bool(token) and any(token in agent for agent in wanted)


def _is_directive(line: bytes) -> bool:
    return b":" in line or line.split(None, 1)[0].lower() in _RULE_WORDS


def _trim(group: list[bytes]) -> list[bytes]:
    while group and group[-1] == b"":
        group = group[:-1]
    return group


def _cut(text: bytes, limit: int) -> bytes:
    """The first ``limit`` bytes of ``text``, without the line the limit falls in."""
    head = text[:limit]
    return head[: head.rfind(b"\n") + 1]
