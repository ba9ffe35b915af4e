"""Live accuracy: prediction ids, the bounded store of pending ones, and feedback against them.

Every prediction request gets an id ``<process>-<n>``: a random prefix per server process (so an
id of another replica, or of this one before a restart, is told apart from an expired one) and a
counter. The store keeps the predicted class indices of the last ``FEEDBACK_CAPACITY`` requests
under the counter, so the newest id evicts the one ``capacity`` before it with a single dict
pop: memory is bounded and the hot path costs one insert and one pop. Feedback (the true
species) is counted once per id, per row, as correct or incorrect.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import FeedbackDuplicate, PredictionExpired, UnknownPrediction


@dataclass(frozen=True, slots=True)
class ShadowAnswer:
    """The shadow's answer to the copy of a request: its id (to relay the feedback to it),
    its version and labels (to judge it here, whichever of its replicas answered)."""

    prediction_id: str
    version: str
    labels: Sequence[str]


# (class indices of the rows, perf_counter() of the request, the shadow's answer or None)
Entry = tuple[Sequence[int], float, ShadowAnswer | None]


@dataclass(slots=True)
class Verdict:
    """What one feedback counted."""

    rows: int
    correct: int
    shadow_id: str  # the candidate's id of the same request ("" without shadow)


class FeedbackStore:
    def __init__(self, capacity: int, ttl_seconds: float) -> None:
        self.prefix = secrets.token_hex(4)
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.issued = 0
        self.pending: dict[int, Entry] = {}

    def issue(self, indices: Sequence[int], started: float) -> str:
        """A new id for a prediction of ``indices`` (hot path: keep it this small)."""
        n = self.issued = self.issued + 1
        pending = self.pending
        pending[n] = (indices, started, None)
        pending.pop(n - self.capacity, None)
        return f"{self.prefix}-{n}"

    def attach_shadow(self, prediction_id: str, answer: ShadowAnswer) -> None:
        """Remember the shadow's answer to the same request, for judging and relaying the
        feedback (a prediction whose feedback came first is left as it is)."""
        n = self._number(prediction_id)
        entry = self.pending.get(n) if n is not None else None
        if n is not None and entry is not None:
            self.pending[n] = (entry[0], entry[1], answer)

    def restore(self, prediction_id: str, entry: Entry) -> None:
        """Put back an entry taken for a feedback that was refused (it may be sent again)."""
        n = self._number(prediction_id)
        if n is not None and n > self.issued - self.capacity:
            self.pending[n] = entry

    def _number(self, prediction_id: str) -> int | None:
        prefix, _, number = prediction_id.rpartition("-")
        if prefix != self.prefix or not number.isdigit():
            return None
        return int(number)

    def take(self, prediction_id: str, now: float | None = None) -> Entry:
        """The pending entry of ``prediction_id``, removed (feedback counts once), or the error
        that says why there is none."""
        n = self._number(prediction_id)
        if n is None or n > self.issued or n < 1:
            raise UnknownPrediction(
                f"prediction id {prediction_id!r} was not issued by this server process; "
                "send feedback to the replica that answered the prediction (on the same "
                "connection), with the prediction_id it returned"
            )
        entry = self.pending.pop(n, None)
        too_old = n <= self.issued - self.capacity
        if entry is None and not too_old:
            raise FeedbackDuplicate(
                f"feedback for prediction {prediction_id!r} was already recorded; "
                "each prediction takes one feedback"
            )
        now = time.perf_counter() if now is None else now
        if entry is None or now - entry[1] > self.ttl_seconds:
            raise PredictionExpired(
                f"prediction {prediction_id!r} has expired: feedback is kept for the last "
                f"{self.capacity} predictions and at most {self.ttl_seconds:g} s "
                "(FEEDBACK_CAPACITY, FEEDBACK_TTL_SECONDS); send it sooner"
            )
        return entry
