"""The files of each conversation in arrival order, and which one to start next.

A :class:`Lane` holds one conversation's claimed files (:class:`~daemon.delivery.job.Job`),
oldest first; :class:`Lanes` holds every lane and picks the next file to start, round-robin
across conversations. Neither locks anything: :mod:`daemon.delivery.pipeline` uses them under its
own lock.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from daemon.delivery.job import Job
from daemon.states import JobState

#: Job states of files whose send is done: the next send of their lane may go.
SENT_STATES = (JobState.ARCHIVING, JobState.DONE)
#: Job states of files a worker (or the archiver) is busy with.
RUNNING_STATES = (JobState.PREPARING, JobState.SENDING, JobState.ARCHIVING)
#: Files of one conversation in flight at once (uploads running ahead of its send).
LANE_AHEAD = 4
#: Files of one conversation journaled ``sending`` in one commit, ahead of their turn.
SENDING_AHEAD = 32


@dataclass(eq=False)
class Lane:
    """The claimed files of one conversation, oldest first."""

    conversation_id: str
    jobs: deque[Job] = field(default_factory=deque)
    """Files not yet done, in arrival order (a done one leaves from the front)."""
    in_flight: int = 0
    """Files of this lane a worker has started and not finished."""
    driving: bool = False
    """A worker is sending this lane's files (one driver per lane)."""
    stalled: bool = False
    """``--once``: a file hit an unforeseen error; the rest waits for the next run."""
    ahead: threading.Lock = field(default_factory=threading.Lock)
    """Held while files of this lane are journaled ``sending`` ahead of their turn: the
    driver waits for that commit before it sends one of them."""
    sent_front: int = 0
    """How many files at the front were found sent (:data:`SENT_STATES`) when last looked:
    the scans below start after them. A sent file leaves those states only as done (and
    :meth:`drop_done` pops it) or when it is parked after an unforeseen error
    (:meth:`rewind`). Without it, every scan walked past every file waiting for the
    archiver: with a backlog of 100 conversations that was most of the CPU."""

    # Plain loops by index, not next() over a generator: the pick asks these of every lane
    # several times per file, and a generator's set-up cost more than the scan itself. Not
    # islice() either: on a deque it steps over every file it skips, and with the archiver
    # behind in a backlog of 100 conversations, that stepping over the sent files of every
    # lane at every pick was a fifth of the interpreter's time (a deque's item lookup hops
    # 64 items at a time).
    def next_queued(self) -> Job | None:
        if self.stalled:
            return None
        jobs = self.jobs
        for index in range(self.sent_front, len(jobs)):
            job = jobs[index]
            if job.state == JobState.QUEUED:
                return job
        return None

    def next_to_send(self) -> Job | None:
        """The oldest file whose send is not done (it may not be ready yet)."""
        self.drop_done()
        jobs = self.jobs
        for index in range(self.sent_front, len(jobs)):
            job = jobs[index]
            if job.state not in SENT_STATES:
                self.sent_front = index
                return job
        self.sent_front = len(jobs)
        return None

    def rewind(self) -> None:
        """A file of this lane left the sent states otherwise than as done (parked): look
        at every file again."""
        self.sent_front = 0

    def in_turn(self) -> list[Job]:
        """The files after those sent that are being sent, or uploaded and waiting for their
        turn, up to the first that is not (still uploading, or queued)."""
        turn: list[Job] = []
        jobs = self.jobs
        for index in range(self.sent_front, len(jobs)):
            job = jobs[index]
            if job.state not in (*SENT_STATES, JobState.SENDING, JobState.READY):
                break
            if job.state != JobState.DONE:
                turn.append(job)
        return turn

    def drop_done(self) -> None:
        """Forget the files at the front that are done."""
        while self.jobs and self.jobs[0].state == JobState.DONE:
            self.jobs.popleft()
            self.sent_front = max(0, self.sent_front - 1)

    def idle(self) -> bool:
        """Nothing left to do in this run: empty, or stalled with no step running."""
        if self.stalled:
            return not any(job.state in RUNNING_STATES for job in self.jobs)
        return not self.jobs

    def insert(self, job: Job) -> None:
        """Insert in arrival order, but never ahead of a file already started."""
        if not self.jobs or self.jobs[-1].order <= job.order:
            self.jobs.append(job)  # the usual case: files are claimed in arrival order
            return
        first_queued = next(
            (i for i, other in enumerate(self.jobs) if other.state == JobState.QUEUED),
            len(self.jobs),
        )
        keys = [other.order for other in itertools.islice(self.jobs, first_queued, None)]
        self.jobs.insert(first_queued + bisect.bisect_right(keys, job.order), job)


class Lanes:
    """Every conversation's lane, in the round-robin order they are served in."""

    def __init__(self) -> None:
        self._by_id: dict[str, Lane] = {}
        self._order: deque[str] = deque()

    def __iter__(self) -> Iterator[Lane]:
        return iter(list(self._by_id.values()))

    def of(self, conversation_id: str) -> Lane:
        """The lane of a conversation, made on first use."""
        lane = self._by_id.get(conversation_id)
        if lane is None:
            lane = self._by_id[conversation_id] = Lane(conversation_id)
            self._order.append(conversation_id)
        return lane

    def jobs(self) -> list[Job]:
        return [job for lane in self._by_id.values() for job in lane.jobs]

    def idle(self) -> bool:
        return all(lane.idle() for lane in self._by_id.values())

    def pick(self, workers: int, *, room: bool = True) -> tuple[Lane, Job] | None:
        """The next file to start, round-robin across lanes; None when none may start.

        ``room``: fewer than ``workers`` files are in flight. A lane's head that comes back
        while later files of its lane are in flight (it was parked after an unexpected
        error, and they uploaded meanwhile) may start whatever the limits: those files hold
        the slots and can only leave after it is sent, so waiting for a free slot would
        stall its conversation, and with every slot held, every conversation.
        """
        # One lane may use every worker only while no other lane is waiting; and it never
        # runs more than LANE_AHEAD files ahead: its sends are one at a time anyway, and
        # more uploads in parallel would only slow the send that all of them wait for.
        cap = LANE_AHEAD
        if workers <= LANE_AHEAD:  # else the cap is LANE_AHEAD whoever waits: no look
            waiting = (lane for lane in self._by_id.values() if lane.next_queued() is not None)
            alone = next(waiting, None) is None or next(waiting, None) is None  # stop at two
            cap = min(workers if alone else max(1, workers - 1), LANE_AHEAD)
        for _ in range(len(self._order)):
            self._order.rotate(-1)
            lane = self._by_id[self._order[-1]]
            job = lane.next_queued()
            if job is None:
                continue
            held_up = lane.in_flight > 0 and job is lane.next_to_send()
            if held_up or (room and lane.in_flight < cap):
                return lane, job
        return None
