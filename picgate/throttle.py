"""Failures counted per address, to refuse an address that keeps failing.

``AddressThrottle`` holds the failures of each address in a sliding window, in memory (per
process: each replica counts its own). Past ``limit`` failures within ``window`` seconds the
address is refused until its oldest counted failure leaves the window. At most
``max_addresses`` are tracked; the address whose last failure is oldest is forgotten first, so
a flood from many addresses costs bounded memory. Used for wrong gateway keys
(``picgate.deps``): without it one address could try ~1000 keys a second.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["AddressThrottle"]


class AddressThrottle:
    """Failures per address in a sliding window; see the module docstring."""

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()  # the Lambda handler and tests call from threads too

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: it may now)."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(address)
            if times is None:
                return 0.0
            self._expire(times, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - now)

    def failed(self, address: str) -> None:
        """Count one failure from ``address``."""
        now = self._clock()
        with self._lock:
            times = self._failures.pop(address, None)
            if times is None:
                times = deque(maxlen=self.limit)
                while len(self._failures) >= self.max_addresses:
                    self._failures.popitem(last=False)
            self._expire(times, now)
            times.append(now)
            self._failures[address] = times  # last: the most recently failing address

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
