"""Fingerprints this worker knows the crawl has seen: duplicates skipped before Redis.

Most links a crawl finds are duplicates (navigation, links back home). Each one used to
cost its whole encoded payload on the wire and a SMISMEMBER in the push script. A
fingerprint that a flush of this crawl has stored, or found already stored, stays in the
crawl's seen-set for as long as the crawl lives (the set never shrinks; a crawl whose
data was lost or replaced is noticed by the scripts, and the worker stops). So a request
whose fingerprint is here is a duplicate, exactly: it is dropped in the worker, as
Scrapy's own scheduler drops what its dupefilter has seen, without being encoded or sent.
A fingerprint not here (never met, or evicted) goes to Redis, which decides as before.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class SeenCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # 0: off
        self._fps: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._fps)

    def __contains__(self, fingerprint: bytes) -> bool:
        if fingerprint in self._fps:
            self._fps.move_to_end(fingerprint)  # a link met often stays
            return True
        return False

    def add(self, fingerprints: Iterable[bytes]) -> None:
        """Fingerprints a flush just stored or found stored (b"": unfiltered, skipped)."""
        if not self.capacity:
            return
        fps = self._fps
        for fp in fingerprints:
            if fp:
                fps[fp] = None
                fps.move_to_end(fp)
        while len(fps) > self.capacity:
            fps.popitem(last=False)
