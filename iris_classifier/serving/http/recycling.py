"""Connection recycling: a kept-alive connection ends after a budget of requests or seconds, so
that pooled clients are placed again by the balancer. Why, and why a connection is keyed by its
peer address: "Pooled clients and idle connections" in iris_classifier/serving/README.md.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass

JITTER = 0.2
# Far more connections than a replica holds open at once; fresh-connection clients make one
# entry each, and the oldest of those go first.
MAX_TRACKED = 4096


@dataclass
class _Budget:
    requests_left: int  # 0: no request limit
    ends_at: float  # time.monotonic(); 0.0: no age limit


class ConnectionRecycler:
    """Decides, answer by answer, whether the answer ends its connection."""

    def __init__(self, max_requests: int, max_seconds: float, seed: int | None = None) -> None:
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self._random = random.Random(seed)
        self._budgets: OrderedDict[tuple[str, int], _Budget] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_requests > 0 or self.max_seconds > 0

    def _new_budget(self, now: float) -> _Budget:
        def jittered(value: float) -> float:
            return value * self._random.uniform(1 - JITTER, 1 + JITTER)

        return _Budget(
            requests_left=max(1, round(jittered(self.max_requests))) if self.max_requests else 0,
            ends_at=now + jittered(self.max_seconds) if self.max_seconds else 0.0,
        )

    def answer_ends_connection(self, client: tuple[str, int] | None) -> bool:
        """Count one answer on the client's connection; True when it must be the last."""
        if client is None:  # no peer address (a test client, a unix socket): nothing to key on
            return False
        key = (client[0], client[1])
        now = time.monotonic()
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = self._new_budget(now)
            if len(self._budgets) > MAX_TRACKED:
                self._budgets.popitem(last=False)
        else:
            self._budgets.move_to_end(key)
        if budget.requests_left:
            budget.requests_left -= 1
            if budget.requests_left == 0:
                del self._budgets[key]
                return True
        if budget.ends_at and now >= budget.ends_at:
            del self._budgets[key]
            return True
        return False

    def forget(self, client: tuple[str, int] | None) -> None:
        """The connection closes for another reason (the client asked, the drain)."""
        if client is not None:
            self._budgets.pop((client[0], client[1]), None)
