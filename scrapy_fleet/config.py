"""All FLEET_* settings, read once into one small typed object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


class ConfigError(ValueError):
    """A FLEET_* setting has a value we cannot use; the message names the setting."""


@dataclass(frozen=True)
class FleetConfig:
    redis_url: str | None = None  # None: start the embedded server under data_dir
    data_dir: str = ".fleet"
    key_prefix: str = "fleet"
    lease_timeout: float = 30.0
    batch_size: int = 16
    poll_interval: float = 0.2
    keep_alive: bool = False
    fresh: bool = False
    seed: bool = True
    redis_retry_timeout: float = 10.0
    download_delay: float = 0.0
    concurrency_per_slot: int = 8

    @property
    def heartbeat_interval(self) -> float:
        # several heartbeats per lease timeout, so one late beat never looks like a death
        return max(0.1, self.lease_timeout / 5)

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> FleetConfig:
        url = settings.get("REDIS_URL") or os.environ.get("REDIS_URL") or None
        config = cls(
            redis_url=url,
            data_dir=settings.get("FLEET_DATA_DIR", cls.data_dir),
            key_prefix=settings.get("FLEET_KEY_PREFIX", cls.key_prefix),
            lease_timeout=_positive(settings, "FLEET_LEASE_TIMEOUT", cls.lease_timeout),
            batch_size=int(_positive(settings, "FLEET_BATCH_SIZE", cls.batch_size)),
            poll_interval=_positive(settings, "FLEET_POLL_INTERVAL", cls.poll_interval),
            keep_alive=settings.getbool("FLEET_KEEP_ALIVE", cls.keep_alive),
            fresh=settings.getbool("FLEET_FRESH", cls.fresh),
            seed=settings.getbool("FLEET_SEED", cls.seed),
            redis_retry_timeout=_positive(
                settings, "FLEET_REDIS_RETRY_TIMEOUT", cls.redis_retry_timeout
            ),
            download_delay=settings.getfloat("DOWNLOAD_DELAY", 0.0),
            concurrency_per_slot=settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN", 8),
        )
        if not config.key_prefix or "{" in config.key_prefix or "}" in config.key_prefix:
            raise ConfigError(
                f"FLEET_KEY_PREFIX must be a non-empty string without braces, got {config.key_prefix!r}"
            )
        if config.concurrency_per_slot < 1:
            raise ConfigError("CONCURRENT_REQUESTS_PER_DOMAIN must be at least 1")
        return config


def _positive(settings: BaseSettings, name: str, default: float) -> float:
    return number_setting(settings, name, default, minimum=0.0, strict=True)


def number_setting(
    settings: BaseSettings, name: str, default: float, *, minimum: float, strict: bool = False
) -> float:
    """A numeric setting of at least ``minimum`` (above it, if ``strict``); a ConfigError
    naming the setting otherwise."""
    raw = settings.get(name, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if strict and value <= minimum:
        raise ConfigError(f"{name} must be greater than {minimum:g}, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value
