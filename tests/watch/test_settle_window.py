"""The settler's backlog under a claim window, with an injected clock: files that stood
still are handed over oldest first, only as far as the room goes, the rest when it frees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.config import InboxConfig
from daemon.watch.settle import HAND_OVER_MOST, FileEvent, Settled, Settler
from tests.watch.test_settle import FakeClock, Taken, drop

SETTLE_SECONDS = 2.0


class Room:
    """A claim window of ``size`` files per inbox; ``finish`` frees a place."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.claimed: dict[Path, int] = {}
        self.asked = 0

    def __call__(self, inbox: InboxConfig) -> int:
        self.asked += 1
        return self.size - self.claimed.get(inbox.path, 0)

    def take(self, batch: list[Settled]) -> None:
        """Claim the files: each leaves the inbox for a hidden folder."""
        for item in batch:
            claims = item.inbox.path / ".claims"
            claims.mkdir(exist_ok=True)
            (item.inbox.path / item.name).rename(claims / item.name)
            self.claimed[item.inbox.path] = self.claimed.get(item.inbox.path, 0) + 1

    def finish(self, inbox: InboxConfig, count: int = 1) -> None:
        self.claimed[inbox.path] -= count


@pytest.fixture
def inbox(tmp_path: Path) -> InboxConfig:
    path = tmp_path / "conv_1"
    path.mkdir()
    return InboxConfig(path, "conv_1", None, "conv_1", from_spool=True)


def windowed(room: Room, clock: FakeClock, refill: int = 1) -> tuple[Settler, Taken]:
    taken = Taken()

    def hand_over(batch: list[Settled]) -> None:
        taken(batch)
        room.take(batch)

    settler = Settler(SETTLE_SECONDS, [], hand_over, clock=clock, room=room, refill=refill)
    return settler, taken


def old_files(inbox: InboxConfig, count: int) -> list[str]:
    """``count`` files whose arrival order (mtime) is the reverse of their names."""
    names = [f"{n:02d}.pdf" for n in range(count)]
    for n, name in enumerate(names):
        drop(inbox, name, mtime=1_000_000 - n)
    return list(reversed(names))


def names(inbox: InboxConfig) -> list[str]:
    """The names in the inbox now (as a scan offers them)."""
    return sorted(entry.name for entry in inbox.path.iterdir())


@dataclass
class Scene:
    """A settler with a claim window over an inbox of old files (``arrival``: their order)."""

    inbox: InboxConfig
    arrival: list[str]
    clock: FakeClock
    room: Room
    settler: Settler
    taken: Taken

    def offered(self) -> Scene:
        """The inbox scanned and looked at once, as at start-up."""
        self.settler.offer(self.inbox, names(self.inbox))
        self.settler.check_due()
        return self

    def finish(self, count: int = 1) -> None:
        """``count`` claimed files finished, one at a time, each said to the settler, which
        then looks again."""
        for _ in range(count):
            self.room.finish(self.inbox)
            self.settler.room_freed(self.inbox.path)
            self.settler.check_due()

    def handed(self) -> list[str]:
        return [name for batch in self.taken.batches for name in batch]


def backlogged(inbox: InboxConfig, files: int, room: int, refill: int = 1) -> Scene:
    """``files`` old files in ``inbox`` and a settler whose window holds ``room`` of them."""
    arrival = old_files(inbox, files)
    clock = FakeClock((inbox.path / arrival[-1]).stat().st_ctime + 60)
    window = Room(room)
    settler, taken = windowed(window, clock, refill)
    return Scene(inbox, arrival, clock, window, settler, taken)


def test_only_the_room_is_handed_over_oldest_first(inbox: InboxConfig) -> None:
    """A backlog bigger than the room: the oldest files go, as many as fit; the rest wait."""
    scene = backlogged(inbox, 10, room=3).offered()
    assert scene.taken.batches == [scene.arrival[:3]]
    assert scene.settler.pending() == 7
    scene.settler.check_due()
    assert scene.taken.batches == [scene.arrival[:3]]  # no room: nothing more, however often


def test_freed_room_takes_the_next_oldest(inbox: InboxConfig) -> None:
    """Each place that frees up takes the next file in arrival order, to the last one."""
    scene = backlogged(inbox, 7, room=2).offered()
    while scene.settler.pending():
        scene.finish()
    assert scene.handed() == scene.arrival
    assert max(len(batch) for batch in scene.taken.batches) == 2


def test_a_rescan_does_not_offer_a_waiting_file_twice(inbox: InboxConfig) -> None:
    """Files waiting in the backlog are known: a rescan adds none of them again."""
    scene = backlogged(inbox, 5, room=1).offered()
    scene.settler.offer(inbox, names(inbox))
    assert scene.settler.pending() == 4
    scene.finish(4)
    assert scene.handed() == scene.arrival


def test_a_waiting_file_written_again_is_watched_again(inbox: InboxConfig) -> None:
    """A file waiting its turn that is written again waits until it stood still again."""
    scene = backlogged(inbox, 3, room=1).offered()
    arrival, settler, taken = scene.arrival, scene.settler, scene.taken
    assert taken.batches == [arrival[:1]]
    settler.seen(inbox, arrival[1], FileEvent.WRITTEN)  # a writer holds it open
    scene.finish()
    assert taken.batches == [arrival[:1], arrival[2:3]]  # the held file holds none back
    assert settler.pending() == 1
    settler.seen(inbox, arrival[1], FileEvent.CLOSED)
    scene.clock.advance(SETTLE_SECONDS)
    scene.room.finish(inbox)
    settler.check_due()
    assert taken.batches == [arrival[:1], arrival[2:3], arrival[1:2]]


def test_once_follows_the_waiting_files(inbox: InboxConfig) -> None:
    """After only_known, files waiting in the backlog are still taken; new ones are not."""
    scene = backlogged(inbox, 4, room=2)
    settler = scene.settler
    settler.offer(inbox, names(inbox))
    settler.only_known()
    drop(inbox, "late.pdf", mtime=1)  # the oldest of all, but it came too late
    settler.offer(inbox, names(inbox))
    settler.check_due()
    scene.room.finish(inbox, 2)
    settler.room_freed(inbox.path)
    settler.check_due()
    assert scene.handed() == scene.arrival
    assert settler.pending() == 0


def test_stuck_when_every_waiting_file_lacks_room(inbox: InboxConfig) -> None:
    """stuck() says when nothing settles and no waiting file may go for want of room."""
    scene = backlogged(inbox, 3, room=1)
    assert not scene.settler.stuck()
    scene.offered()
    assert scene.settler.stuck()
    scene.room.finish(inbox)
    assert not scene.settler.stuck()


def test_freed_room_is_filled_refill_files_at_a_time(inbox: InboxConfig) -> None:
    """With ``refill``, files wait until that many places are free (or only the last few are
    left), then go together in arrival order."""
    scene = backlogged(inbox, 11, room=4, refill=3).offered()
    arrival, taken = scene.arrival, scene.taken
    scene.finish(2)
    assert taken.batches == [arrival[:4]]  # two places free: not yet
    scene.finish()
    assert taken.batches == [arrival[:4], arrival[4:7]]
    scene.finish(4)  # three for the next batch, then one place for the last one: it goes
    assert taken.batches == [arrival[:4], arrival[4:7], arrival[7:10], arrival[10:]]


def test_the_room_is_looked_at_once_a_batch_has_room(inbox: InboxConfig) -> None:
    """Files finished one by one wake the settle thread once ``refill`` of them are done, not
    once each: a look at the room (the pipeline's lock) per finished file slowed a backlog."""
    scene = backlogged(inbox, 11, room=4, refill=3).offered()
    looked = scene.room.asked
    scene.finish(2)
    assert scene.room.asked == looked
    scene.finish()
    # The look that hands the batch over, and one after it (the room may have grown
    # meanwhile).
    assert scene.room.asked == looked + 2
    assert scene.taken.batches == [scene.arrival[:4], scene.arrival[4:7]]


def test_inboxes_take_turns_handing_over(tmp_path: Path) -> None:
    """A backlog in two inboxes goes HAND_OVER_MOST files of each at a time, in turns: the
    second inbox's first files go before the first inbox's last ones. One inbox after the
    other, the second conversation would wait for the whole of the first."""
    most = HAND_OVER_MOST
    inboxes = []
    for name in ("conv_1", "conv_2"):
        (tmp_path / name).mkdir()
        inboxes.append(InboxConfig(tmp_path / name, name, None, name, from_spool=True))
    arrivals = [old_files(inbox, most + 3) for inbox in inboxes]
    clock = FakeClock(max(p.stat().st_ctime for p in tmp_path.rglob("*.pdf")) + 60)
    settler, taken = windowed(Room(10 * most), clock)
    for inbox in inboxes:
        settler.offer(inbox, names(inbox))
    settler.check_due()
    first, second = arrivals
    assert taken.batches == [first[:most], second[:most], first[most:], second[most:]]
