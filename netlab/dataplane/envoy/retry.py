"""Istio's default retry policy, as Envoy's router applies it (mesh-facts-2 §D1).

Every route istiod builds for a Service (`default`) carries `retry_on:
connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with
`retriable_status_codes: [503]`, 2 retries, the `previous_hosts` host predicate (a retry
tries another endpoint when there is one) and Envoy's default back-off (fully jittered,
25 ms base, 250 ms cap). The catch-all route `allow_any` has no retry policy at all, which
is why istio#55472's 503 carries `UC` and no `URX`.

Sources: istio@1.24.0 `pilot/pkg/networking/core/route/retry/retry.go` (`DefaultPolicy`);
Envoy's router docs (`x-envoy-max-retries`, back-off).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import FrozenSet

from netlab.dataplane.envoy import local_reply

BASE_INTERVAL = 0.025
MAX_INTERVAL = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    num_retries: int
    retry_on: FrozenSet[str]
    retriable_status_codes: FrozenSet[int] = frozenset()

    def retries_reset(self, reason: str) -> bool:
        """Does this policy retry an upstream that failed with `reason` before a response?"""
        return self.num_retries > 0 and reason in local_reply.RETRIABLE_RESETS \
            and "connect-failure" in self.retry_on

    def retries_status(self, status: int) -> bool:
        return (self.num_retries > 0 and "retriable-status-codes" in self.retry_on
                and status in self.retriable_status_codes)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): Envoy's jittered exponential back-off.

        This is modelled Envoy behaviour (its timer between tries), not a wait for a condition.
        """
        cap = min(MAX_INTERVAL, BASE_INTERVAL * (2 ** (attempt - 1)))
        return random.uniform(0, cap)


DEFAULT = RetryPolicy(2, frozenset({"connect-failure", "refused-stream", "unavailable",
                                    "cancelled", "retriable-status-codes"}), frozenset({503}))
NONE = RetryPolicy(0, frozenset())
