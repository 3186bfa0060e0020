"""Lanes: each conversation's files in arrival order, and fair turns across conversations."""

from __future__ import annotations

from pathlib import Path

from daemon.config import InboxConfig
from daemon.delivery.job import Job
from daemon.delivery.lanes import LANE_AHEAD, Lane, Lanes
from daemon.states import JobState
from daemon.store.claims import Claim
from daemon.store.journal import Entry


def _job(conversation: str, name: str, arrived_ns: int) -> Job:
    inbox = Path("/spool") / conversation
    claim = Claim(inbox, f"sw-{name}", name, inbox / ".sendseven-watch" / "me")
    entry = Entry(f"sw-{name}", str(inbox), conversation, name, "claimed", arrived_ns, 0.0, 0.0)
    return Job(claim, InboxConfig(inbox, conversation, None, conversation), entry)


def _start(lanes: Lanes, workers: int) -> tuple[Lane, Job] | None:
    """What the pipeline does with a pick: the file is in flight."""
    picked = lanes.pick(workers)
    if picked is not None:
        lane, job = picked
        job.state = "preparing"
        lane.in_flight += 1
    return picked


def test_a_late_claim_of_an_older_file_goes_before_newer_queued_ones() -> None:
    """Arrival order (mtime, then name) holds even when a file is claimed late."""
    lane = Lane("conv")
    for name, arrived in (("b.pdf", 20), ("d.pdf", 40)):
        lane.insert(_job("conv", name, arrived))
    lane.insert(_job("conv", "c.pdf", 30))
    lane.insert(_job("conv", "a.pdf", 20))  # same mtime as b.pdf: the name decides
    assert [job.entry.name for job in lane.jobs] == ["a.pdf", "b.pdf", "c.pdf", "d.pdf"]


def test_a_late_claim_never_goes_ahead_of_a_file_already_started() -> None:
    """Once a file is on its way, an older latecomer queues after it."""
    lane = Lane("conv")
    lane.insert(_job("conv", "b.pdf", 20))
    lane.jobs[0].state = "sending"
    lane.insert(_job("conv", "a.pdf", 10))
    assert [job.entry.name for job in lane.jobs] == ["b.pdf", "a.pdf"]


def test_turns_go_round_the_conversations() -> None:
    """With files waiting in three conversations, each gets a turn before any gets two."""
    lanes = Lanes()
    for conversation in ("c1", "c2", "c3"):
        for n in range(3):
            lanes.of(conversation).insert(_job(conversation, f"{conversation}-{n}", n))
    started = [_start(lanes, workers=16) for _ in range(6)]
    names = [job.entry.name for _, job in filter(None, started)]
    assert names == ["c1-0", "c2-0", "c3-0", "c1-1", "c2-1", "c3-1"]


def test_one_conversation_runs_at_most_lane_ahead_files_at_once() -> None:
    """A busy conversation's uploads run ahead of its send, but only so far."""
    lanes = Lanes()
    for n in range(LANE_AHEAD + 3):
        lanes.of("busy").insert(_job("busy", f"f{n}", n))
    started = [_start(lanes, workers=16) for _ in range(LANE_AHEAD + 1)]
    assert all(started[:LANE_AHEAD]) and started[LANE_AHEAD] is None


def test_a_stalled_lane_starts_nothing_and_is_idle_once_nothing_runs() -> None:
    """--once after a file_error: the rest of the conversation waits for the next run."""
    lanes = Lanes()
    for n in range(3):
        lanes.of("conv").insert(_job("conv", f"f{n}", n))
    picked = _start(lanes, workers=4)
    assert picked is not None
    lane, job = picked
    lane.stalled = True
    assert lanes.pick(4) is None
    assert not lanes.idle()  # f0 is still being worked on
    job.state = "parked"
    assert lanes.idle()


def test_done_files_leave_from_the_front_and_the_next_to_send_is_the_oldest() -> None:
    """The send head skips files already sent (archiving) and forgets done ones."""
    lane = Lane("conv")
    for n in range(4):
        lane.insert(_job("conv", f"f{n}", n))
    states = ["done", "archiving", "ready", "queued"]
    for job, state in zip(lane.jobs, states, strict=True):
        job.state = state
    head = lane.next_to_send()
    assert head is not None and head.entry.name == "f2"
    assert [job.entry.name for job in lane.jobs] == ["f1", "f2", "f3"]


def test_a_lane_head_back_from_a_park_starts_even_when_later_files_hold_every_slot() -> None:
    """A parked head that comes back while its later files are in flight starts at once:
    they wait for it, so waiting for a free slot would stall its conversation for good."""
    lanes = Lanes()
    lane = lanes.of("conv")
    head = _job("conv", "a.pdf", 10)
    lane.insert(head)
    for n in range(LANE_AHEAD):
        later = _job("conv", f"b{n}.pdf", 20 + n)
        lane.insert(later)
        later.state = "ready"  # uploaded, waiting for the head to be sent
        lane.in_flight += 1
    assert lanes.pick(LANE_AHEAD, room=False) == (lane, head)


def test_a_queued_head_with_nothing_in_flight_waits_for_room() -> None:
    """The exception is only for a head its later files wait on: no room, no start."""
    lanes = Lanes()
    lanes.of("conv").insert(_job("conv", "a.pdf", 10))
    assert lanes.pick(4, room=False) is None
    assert lanes.pick(4, room=True) is not None


def test_scans_start_after_the_files_already_sent_until_one_is_parked() -> None:
    """Files sent and waiting for the archiver are passed over once, not by every scan;
    done ones leave from the front; a sent file parked and queued again (an unforeseen
    error while archiving) is found again once the lane is rewound, as the pipeline does."""
    lane = Lane("conv")
    for n in range(5):
        lane.insert(_job("conv", f"{n}.pdf", n))
    jobs = list(lane.jobs)
    for job in jobs[:3]:
        job.state = JobState.ARCHIVING
    assert lane.next_to_send() is jobs[3]
    assert lane.sent_front == 3
    assert lane.next_queued() is jobs[3]
    jobs[0].state = JobState.DONE
    lane.drop_done()
    assert lane.sent_front == 2
    assert lane.next_to_send() is jobs[3]
    jobs[1].state = JobState.QUEUED  # parked after an archiving error, due again
    assert lane.next_queued() is jobs[3]  # still passed over: the lane was not told
    lane.rewind()
    assert lane.next_queued() is jobs[1]
    assert lane.next_to_send() is jobs[1]
