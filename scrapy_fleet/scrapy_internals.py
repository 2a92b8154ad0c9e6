"""Every Scrapy attribute scrapy-fleet uses that Scrapy does not offer as public API.

Each is registered here once, with the class that owns it and why no public API serves,
and the rest of the package reaches it only through the accessor next to its entry.
``tests/test_scrapy_internals.py`` walks :data:`INTERNALS` and fails, naming the
attribute, when the installed Scrapy no longer has one: a Scrapy upgrade that removes or
renames it shows up there, not as an AttributeError in the middle of a crawl.

To add one: an ``_internal(owner, attribute, why)`` line and an accessor below it. An
attribute counts as present if the owner class has it (methods, class attributes,
``__slots__``) or if a method of the owner (or of a Scrapy base class) assigns
``self.<attribute>``, so instance attributes need no instance to be checked.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy.utils.misc import load_object

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.core.downloader import Downloader, Slot
    from scrapy.core.engine import ExecutionEngine


@dataclass(frozen=True)
class Internal:
    owner: str  # import path of the class, e.g. "scrapy.core.downloader.Downloader"
    attribute: str
    why: str  # why no public API serves

    @property
    def name(self) -> str:
        return f"{self.owner}.{self.attribute}"


INTERNALS: list[Internal] = []


def _internal(owner: str, attribute: str, why: str) -> Internal:
    entry = Internal(owner, attribute, why)
    INTERNALS.append(entry)
    return entry


def missing(entry: Internal) -> str | None:
    """Why the installed Scrapy lacks ``entry`` (None: it has it)."""
    try:
        owner = load_object(entry.owner)
    except (ImportError, AttributeError, NameError, ValueError) as exc:
        return f"{entry.owner} no longer exists ({exc}), so {entry.name} is gone"
    if hasattr(owner, entry.attribute) or _assigned_on_self(owner, entry.attribute):
        return None
    return f"{entry.name} no longer exists in the installed Scrapy"


def _assigned_on_self(cls: type, attribute: str) -> bool:
    """Whether a method of ``cls`` or of a Scrapy base class sets ``self.<attribute>``."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "scrapy":
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            for target in targets:
                if (isinstance(target, ast.Attribute) and target.attr == attribute
                        and isinstance(target.value, ast.Name) and target.value.id == "self"):
                    return True
    return False


# --- the downloader's own slots (scrapy_fleet/politeness/slots.py) -----------------------
# Not private, but undocumented: AutoThrottle, a built-in extension, reaches them the same
# way. On the fleet the delay between a slot's requests is held in Redis for all workers;
# the process's own slot must not add DOWNLOAD_DELAY (or its jitter) on top. DOWNLOAD_SLOTS
# only covers slots named in advance, and there is no public setter for a slot's delay.

_internal("scrapy.core.downloader.Downloader", "slots",
          "no public way to reach the Slot a request is downloaded in")
_internal("scrapy.core.downloader.Slot", "delay",
          "no public setter for one slot's delay (AutoThrottle sets it like this)")
_internal("scrapy.core.downloader.Slot", "jitter",
          "no public setter for one slot's random variation of its delay")


def local_slot(downloader: Downloader, key: str) -> Slot | None:
    """This process's downloader slot ``key`` (None if it has none by that key)."""
    return downloader.slots.get(key)


def clear_local_delay(slot: Slot) -> None:
    """No delay (nor jitter) in this process's slot: the fleet spaces the requests."""
    if slot.delay or slot.jitter:
        slot.delay = 0.0
        slot.jitter = 0.0


# --- the engine (scrapy_fleet/frontier/scheduler.py) -------------------------------------

_internal("scrapy.core.engine.ExecutionEngine", "_handle_downloader_output",
          "the one place every downloaded request ends (response, failure, or the redirect "
          "or retry that replaced it), and its Deferred fires after the callback/errback "
          "output was handed on: items through the pipelines, requests enqueued. Signals "
          "(response_received, item_scraped...) fire earlier or miss errback output; the "
          "frontier acknowledges a request only at this moment")
_internal("scrapy.core.engine.ExecutionEngine", "_slot",
          "the engine's loop (its nextcall) lives there; see nextcall")
_internal("scrapy.core.engine._Slot", "nextcall",
          "an idle engine polls its scheduler only every 5 s; the fleet wakes it when work "
          "may exist (a delayed host comes due, a tick found work) and there is no public "
          "call that schedules an engine turn without a request to crawl")


def wrap_downloader_output(engine: ExecutionEngine,
                           after: Callable[[Any, Request, Any], Any]) -> None:
    """Call ``after(outcome, request, result)`` once the engine has handed on what a
    downloaded request produced (see the entry above): ``result`` is what the download
    gave (a Response, a Failure, or the Request that replaced it), ``outcome`` what the
    handing-on gave (passed through)."""
    original = engine._handle_downloader_output

    def handle_and_finish(result: Any, request: Request) -> Any:
        d = original(result, request)
        d.addBoth(after, request, result)
        return d

    engine._handle_downloader_output = handle_and_finish  # type: ignore[method-assign]


def wake_engine(engine: ExecutionEngine) -> None:
    """Schedule one turn of the engine's loop (a no-op while one is pending)."""
    slot = getattr(engine, "_slot", None)
    if slot is not None:
        slot.nextcall.schedule()
