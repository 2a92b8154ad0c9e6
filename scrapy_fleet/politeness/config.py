"""The politeness settings (all FLEET_*, plus Scrapy's own AUTOTHROTTLE_* for adaptive mode),
read once into one small typed object. docs/politeness.md describes each of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from scrapy_fleet.config import ConfigError
from scrapy_fleet.config import number_setting as _number

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


@dataclass(frozen=True)
class PolitenessConfig:
    download_delay: float = 0.0  # DOWNLOAD_DELAY, enforced fleet-wide by the frontier
    max_crawl_delay: float = 30.0  # FLEET_MAX_CRAWL_DELAY: hosts asking for more are skipped
    robots_timeout: float = 60.0  # FLEET_ROBOTS_TIMEOUT: how long a fetch of robots.txt may hold the lock
    robots_max_bytes: int = 64 * 1024  # FLEET_ROBOTS_MAX_BYTES: the most of a robots.txt kept in Redis
    host_state_ttl: float = 600.0  # FLEET_HOST_STATE_TTL: a finished host's state goes after this (0: never)
    # FLEET_SKIP_UNREACHABLE_HOSTS: a host whose robots.txt fetch found it unreachable (no
    # DNS name, connection refused, connect timeout) fails its pages at once
    skip_unreachable: bool = True
    backoff_codes: frozenset[int] = frozenset({429, 503})  # FLEET_BACKOFF_HTTP_CODES
    backoff_base: float = 1.0  # FLEET_BACKOFF_BASE: first pause without Retry-After
    backoff_max: float = 300.0  # FLEET_BACKOFF_MAX: cap on any pause (Retry-After included)
    autothrottle: bool = False  # FLEET_AUTOTHROTTLE (default: AUTOTHROTTLE_ENABLED)
    autothrottle_start_delay: float = 5.0  # AUTOTHROTTLE_START_DELAY
    autothrottle_max_delay: float = 60.0  # AUTOTHROTTLE_MAX_DELAY
    autothrottle_target_concurrency: float = 1.0  # AUTOTHROTTLE_TARGET_CONCURRENCY

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> PolitenessConfig:
        codes = settings.getlist("FLEET_BACKOFF_HTTP_CODES", sorted(cls.backoff_codes))
        try:
            backoff_codes = frozenset(int(c) for c in codes)
        except (TypeError, ValueError):
            raise ConfigError(f"FLEET_BACKOFF_HTTP_CODES must be HTTP status codes, got {codes!r}") from None
        config = cls(
            download_delay=_number(settings, "DOWNLOAD_DELAY", 0.0, minimum=0.0),
            max_crawl_delay=_number(settings, "FLEET_MAX_CRAWL_DELAY", cls.max_crawl_delay, minimum=0.0),
            robots_timeout=_number(settings, "FLEET_ROBOTS_TIMEOUT", cls.robots_timeout, minimum=0.001),
            # a few hundred bytes hold the groups of a typical robots.txt; below that, cuts
            # would be the rule rather than the exception
            robots_max_bytes=int(_number(settings, "FLEET_ROBOTS_MAX_BYTES", cls.robots_max_bytes,
                                         minimum=1024)),
            host_state_ttl=_number(settings, "FLEET_HOST_STATE_TTL", cls.host_state_ttl, minimum=0.0),
            skip_unreachable=settings.getbool("FLEET_SKIP_UNREACHABLE_HOSTS", cls.skip_unreachable),
            backoff_codes=backoff_codes,
            backoff_base=_number(settings, "FLEET_BACKOFF_BASE", cls.backoff_base, minimum=0.001),
            backoff_max=_number(settings, "FLEET_BACKOFF_MAX", cls.backoff_max, minimum=0.001),
            autothrottle=settings.getbool(
                "FLEET_AUTOTHROTTLE", settings.getbool("AUTOTHROTTLE_ENABLED", False)
            ),
            autothrottle_start_delay=_number(settings, "AUTOTHROTTLE_START_DELAY", 5.0, minimum=0.0),
            autothrottle_max_delay=_number(settings, "AUTOTHROTTLE_MAX_DELAY", 60.0, minimum=0.0),
            autothrottle_target_concurrency=_number(
                settings, "AUTOTHROTTLE_TARGET_CONCURRENCY", 1.0, minimum=0.001
            ),
        )
        if config.backoff_max < config.backoff_base:
            raise ConfigError("FLEET_BACKOFF_MAX must not be smaller than FLEET_BACKOFF_BASE")
        return config
