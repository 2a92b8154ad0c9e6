"""All FLEET_* settings, read once into one small typed object."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy_fleet.frontier.keys import MAX_PARTITIONS
from scrapy_fleet.frontier.seenset import (
    DEFAULT_BLOOM_CAPACITY,
    DEFAULT_BLOOM_ERROR_RATE,
    MAX_CAPACITY,
    MIN_ERROR_RATE,
    MODES,
)

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


class ConfigError(ValueError):
    """A FLEET_* setting has a value we cannot use; the message names the setting."""


REDIS_MAX_BULK = 512 * 1024 * 1024  # Redis's proto-max-bulk-len: the largest value it accepts
# The default cap on one encoded request. Well below REDIS_MAX_BULK, and small enough that
# a whole buffered push batch (the scheduler flushes at 64 entries) stays under Redis's
# 1 GB client query buffer; real requests are a few KB.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")

# `scrapy fleet` hands its workers the -s settings that hold a secret (REDIS_URL, anything
# named like a password or holding a URL with one) in this variable, as a JSON object,
# instead of on their command lines, which every local user can read in `ps`. The add-on
# applies them with the priority of -s.
SECRET_SETTINGS_ENV = "FLEET_SECRET_SETTINGS"
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_KEY", re.IGNORECASE)


@dataclass(frozen=True)
class FleetConfig:
    redis_url: str | None = None  # None: start the embedded server under data_dir
    data_dir: str = ".fleet"
    key_prefix: str = "fleet"
    lease_timeout: float = 30.0
    batch_size: int = 16
    poll_interval: float = 0.2
    keep_alive: bool = False
    idle_timeout: float = 0.0  # keep-alive crawls: end after this long with nothing to do (0: never)
    fresh: bool = False
    seed: bool = True
    redis_retry_timeout: float = 10.0
    download_delay: float = 0.0
    concurrency_per_slot: int = 8
    # what a request read back from Redis may be (scrapy_fleet/frontier/codec.py)
    allowed_schemes: frozenset[str] = frozenset({"http", "https"})
    trusted_meta: frozenset[str] = frozenset()
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    local_seen: int = 100_000  # fingerprints a worker keeps to drop sure duplicates (0: off)
    # the crawl's seen-set (scrapy_fleet/frontier/seenset.py); for a new crawl only
    dupefilter: str = MODES[0]
    bloom_capacity: int = DEFAULT_BLOOM_CAPACITY
    partitions: int | None = None  # a new crawl's; None: 16 on a Redis Cluster, else 1
    bloom_error_rate: float = DEFAULT_BLOOM_ERROR_RATE
    wait_replicas: int = 0  # replicas that must hold a split crawl's pushes before acks

    @property
    def heartbeat_interval(self) -> float:
        # several heartbeats per lease timeout, so one late beat never looks like a death
        return max(0.1, self.lease_timeout / 5)

    def layout_options(self) -> dict[str, Any]:
        """RedisFrontier's arguments that shape a new crawl: its seen-set and partitions
        (a crawl keeps the shape it was made with)."""
        return {"dupefilter": self.dupefilter, "bloom_capacity": self.bloom_capacity,
                "bloom_error_rate": self.bloom_error_rate, "partitions": self.partitions}

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> FleetConfig:
        url = settings.get("REDIS_URL") or os.environ.get("REDIS_URL")
        if url and settings.get("REDIS_DB") not in (None, ""):
            raise ConfigError("REDIS_DB is set next to REDIS_URL, which names the database "
                              "itself: put it in the URL (redis://host:6379/2) and remove REDIS_DB")
        url = url or _host_port_url(settings)
        config = cls(
            redis_url=url,
            data_dir=settings.get("FLEET_DATA_DIR", cls.data_dir),
            key_prefix=settings.get("FLEET_KEY_PREFIX", cls.key_prefix),
            lease_timeout=_positive(settings, "FLEET_LEASE_TIMEOUT", cls.lease_timeout),
            batch_size=int(_positive(settings, "FLEET_BATCH_SIZE", cls.batch_size)),
            poll_interval=_positive(settings, "FLEET_POLL_INTERVAL", cls.poll_interval),
            keep_alive=settings.getbool("FLEET_KEEP_ALIVE", cls.keep_alive),
            idle_timeout=_idle_timeout(settings),
            fresh=settings.getbool("FLEET_FRESH", cls.fresh),
            seed=settings.getbool("FLEET_SEED", cls.seed),
            redis_retry_timeout=_positive(
                settings, "FLEET_REDIS_RETRY_TIMEOUT", cls.redis_retry_timeout
            ),
            download_delay=settings.getfloat("DOWNLOAD_DELAY", 0.0),
            concurrency_per_slot=settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN", 8),
            allowed_schemes=_schemes(settings),
            trusted_meta=_trusted_meta(settings),
            max_request_bytes=_max_request_bytes(settings),
            local_seen=int(number_setting(settings, "FLEET_LOCAL_SEEN", cls.local_seen,
                                          minimum=0.0)),
            dupefilter=_dupefilter(settings),
            bloom_capacity=_bloom_capacity(settings),
            bloom_error_rate=_bloom_error_rate(settings),
            partitions=_partitions(settings),
            wait_replicas=_wait_replicas(settings),
        )
        if not config.key_prefix or "{" in config.key_prefix or "}" in config.key_prefix:
            raise ConfigError(
                f"FLEET_KEY_PREFIX must be a non-empty string without braces, got {config.key_prefix!r}"
            )
        if config.concurrency_per_slot < 1:
            raise ConfigError("CONCURRENT_REQUESTS_PER_DOMAIN must be at least 1")
        return config


def is_secret_setting(name: str, value: object) -> bool:
    """REDIS_URL, a setting named like a password or key, or a value that is a URL with a
    password: what must stay off command lines."""
    return name == "REDIS_URL" or bool(_SECRET_NAME.search(name)) or _url_password(value)


def _url_password(value: object) -> bool:
    if not isinstance(value, str) or "://" not in value:
        return False
    try:
        return bool(urlsplit(value).password)
    except ValueError:
        return False


def split_secret_settings(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """``-s NAME=VALUE`` arguments: those that may go on a command line, and the secret ones."""
    public: list[str] = []
    secret: dict[str, str] = {}
    for arg in args:
        name, _, value = arg.partition("=")
        if is_secret_setting(name.strip(), value):
            secret[name.strip()] = value
        else:
            public.append(arg)
    return public, secret


def worker_environment(setting_args: list[str]) -> dict[str, str]:
    """The environment of a `scrapy fleet` worker: ours, plus its secret -s settings."""
    env = dict(os.environ)
    env.pop(SECRET_SETTINGS_ENV, None)
    _, secret = split_secret_settings(setting_args)
    if secret:
        env[SECRET_SETTINGS_ENV] = json.dumps(secret)
    return env


def secret_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The secret settings `scrapy fleet` passed to this worker (SECRET_SETTINGS_ENV)."""
    raw = environ.get(SECRET_SETTINGS_ENV)
    if not raw:
        return {}
    try:
        values = json.loads(raw)
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise ConfigError(f"{SECRET_SETTINGS_ENV} must be a JSON object of setting names to strings")
    return values


def _host_port_url(settings: BaseSettings) -> str | None:
    """scrapy-redis's REDIS_HOST / REDIS_PORT / REDIS_DB, when REDIS_URL is not set."""
    host, port, db = (settings.get(n) for n in ("REDIS_HOST", "REDIS_PORT", "REDIS_DB"))
    if not (host or port):
        if db not in (None, ""):
            # scrapy-redis would use localhost:6379; we would use the embedded server:
            # rather than guess, say where the database number goes
            raise ConfigError("REDIS_DB is set without REDIS_HOST/REDIS_PORT: name the server "
                              "with REDIS_URL, the database in it (redis://host:6379/2)")
        return None
    host = str(host or "localhost")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"redis://{host}:{int(port or 6379)}/{int(db or 0)}"


def _idle_timeout(settings: BaseSettings) -> float:
    """FLEET_IDLE_TIMEOUT, or scrapy-redis's MAX_IDLE_TIME_BEFORE_CLOSE (both seconds)."""
    name = "FLEET_IDLE_TIMEOUT"
    if settings.get(name) is None and settings.get("MAX_IDLE_TIME_BEFORE_CLOSE") is not None:
        name = "MAX_IDLE_TIME_BEFORE_CLOSE"
    return number_setting(settings, name, 0.0, minimum=0.0)


def _schemes(settings: BaseSettings) -> frozenset[str]:
    raw = settings.getlist("FLEET_ALLOWED_SCHEMES", ["http", "https"])
    schemes = frozenset(str(s).strip().lower().rstrip(":") for s in raw)
    bad = sorted(s for s in schemes if not _SCHEME.match(s))
    if not schemes or bad:
        raise ConfigError(f"FLEET_ALLOWED_SCHEMES must list URL schemes such as http,https; got {raw!r}")
    return schemes


def _trusted_meta(settings: BaseSettings) -> frozenset[str]:
    from scrapy_fleet.frontier.codec import GUARDED_META  # the codec owns the list

    keys = frozenset(str(k).strip() for k in settings.getlist("FLEET_TRUSTED_META", []))
    unknown = sorted(keys - set(GUARDED_META))
    if unknown:
        raise ConfigError(
            f"FLEET_TRUSTED_META lists {', '.join(unknown)}, which the fleet never holds back; "
            f"it takes only: {', '.join(GUARDED_META)}"
        )
    return keys


def _max_request_bytes(settings: BaseSettings) -> int:
    value = number_setting(settings, "FLEET_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES,
                           minimum=0.0, strict=True)
    if value >= REDIS_MAX_BULK:
        raise ConfigError(f"FLEET_MAX_REQUEST_BYTES must be below Redis's limit of "
                          f"{REDIS_MAX_BULK} bytes (512 MB), got {value:.0f}")
    return int(value)


def _dupefilter(settings: BaseSettings) -> str:
    mode = str(settings.get("FLEET_DUPEFILTER") or MODES[0]).strip().lower()
    if mode not in MODES:
        raise ConfigError(f"FLEET_DUPEFILTER must be one of {', '.join(MODES)}, got "
                          f"{settings.get('FLEET_DUPEFILTER')!r}")
    return mode


def _partitions(settings: BaseSettings) -> int | None:
    raw = settings.get("FLEET_PARTITIONS")
    if raw in (None, "", "auto"):
        return None
    value = number_setting(settings, "FLEET_PARTITIONS", 1, minimum=1.0)
    if value != int(value) or value > MAX_PARTITIONS:
        raise ConfigError(f"FLEET_PARTITIONS must be a whole number from 1 to {MAX_PARTITIONS} "
                          f"(or auto), got {raw!r}")
    return int(value)


def _wait_replicas(settings: BaseSettings) -> int:
    value = number_setting(settings, "FLEET_WAIT_REPLICAS", 0, minimum=0.0)
    if value != int(value):
        raise ConfigError(f"FLEET_WAIT_REPLICAS must be a whole number, got "
                          f"{settings.get('FLEET_WAIT_REPLICAS')!r}")
    return int(value)


def _bloom_capacity(settings: BaseSettings) -> int:
    value = number_setting(settings, "FLEET_BLOOM_CAPACITY", DEFAULT_BLOOM_CAPACITY, minimum=1.0)
    if value > MAX_CAPACITY:
        raise ConfigError(f"FLEET_BLOOM_CAPACITY must be at most {MAX_CAPACITY:.0e} (the filter "
                          f"grows past it by itself), got {value:.0f}")
    return int(value)


def _bloom_error_rate(settings: BaseSettings) -> float:
    value = number_setting(settings, "FLEET_BLOOM_ERROR_RATE", DEFAULT_BLOOM_ERROR_RATE,
                           minimum=0.0, strict=True)
    if not MIN_ERROR_RATE <= value < 0.5:
        raise ConfigError(f"FLEET_BLOOM_ERROR_RATE must be between {MIN_ERROR_RATE:g} and 0.5 "
                          f"(a fraction: 0.001 is one URL in a thousand), got {value:g}")
    return value


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
