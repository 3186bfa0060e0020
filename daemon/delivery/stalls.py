"""When a claimed file counts as stuck: the bound, and what is said about one.

A claimed file *progresses* when a stage of it is done (uploaded, sent, failed, archived)
or an attempt at it is made (an API request, a retry after an unexpected error, a worker
taking it up). Trying again to move it into ``sent/`` or ``failed/`` is not progress:
that can go on for ever. A file waiting for its turn (queued for a worker, or uploaded and
waiting for an older file of its conversation to be sent) progresses whenever its
conversation does. A file stuck is one without progress for longer than
:func:`stall_bound`: the larger of :data:`STALL_FLOOR_SECONDS` and twice
``retry.max_delay`` (the longest a healthy file waits between two attempts). While the API
holds every file for a reason of its own (refused credentials: the gate is closed), no
file is stuck; time spent so does not count (see the README, "Metrics and health").
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config import RetryConfig

#: The shortest time without progress after which a claimed file is stuck, in seconds.
STALL_FLOOR_SECONDS = 600.0


def stall_bound(retry: RetryConfig) -> float:
    """Seconds without progress after which a claimed file is stuck."""
    return max(STALL_FLOOR_SECONDS, 2 * retry.max_delay)


@dataclass(frozen=True)
class ClaimAge:
    """The claimed file of one inbox that has gone longest without progress."""

    inbox: str
    """The inbox's name (its folder's)."""
    path: str
    """The inbox's path."""
    file: str
    """The file's name."""
    seconds: float
    """Seconds since its last progress."""
    why: str
    """Where it is and what held it last (its stage, its last error)."""
