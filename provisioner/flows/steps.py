"""The shape of every flow: observe, decide (pure), execute one step; again while the step says so.

``decide(observed) -> step`` is a pure function of what was observed (cached objects, what Cinder
answered, the claim's hint, the clock's reading): table tests cover it with plain values, no fakes. The
executor performs exactly the step it is given through the ports and returns an Outcome, or ``None`` for
"this step changed the world; observe again and take the next one now". ``drive`` bounds that loop so a
reconcile call does a few cheap steps (persist intent, then create) without ever spinning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from provisioner.domain.outcome import Outcome, error

Obs = TypeVar("Obs")
S = TypeVar("S")

#: Steps one reconcile call may take before it hands the key back to the queue.
MAX_STEPS = 4


def drive(
    observe: Callable[[], Obs],
    decide: Callable[[Obs], S],
    execute: Callable[[S], Outcome | None],
    *,
    max_steps: int = MAX_STEPS,
) -> Outcome:
    """Run observe → decide → execute until a step returns an Outcome (at most ``max_steps`` rounds)."""
    for _ in range(max_steps):
        outcome = execute(decide(observe()))
        if outcome is not None:
            return outcome
    return error("too_many_steps", f"no outcome after {max_steps} steps; will look again")
