"""The bundled fake API in its own process, reporting what it received (for bench/run.py).

Runs :class:`daemon.fake.api.FakeApi` on 127.0.0.1 with the given latency, so that the server
never shares a GIL with the daemon, the baseline or the measuring process. It prints one
JSON line ``{"url": ...}`` once it listens, then answers commands read from stdin, one per
line, each with one JSON line on stdout:

``count``                 ``{"count": n}`` messages created so far (idempotent repeats excluded)
``wait N TIMEOUT``        waits until ``n`` messages exist (or the timeout), then as ``count``
``cpu``                   ``{"cpu": s}``: this process's user + system CPU seconds so far
``first``                 ``{"first": t}``: ``time.time()`` of the first message (or null)
``dump``                  ``{"messages": [...]}``: every message created, in creation order,
                          with ``conversation_id``, ``filename``, ``t`` (``time.time()`` when
                          the fake created it), ``idempotency_key``
``reset``                 forgets what it received; ``{"ok": true}``
``quit``                  stops (EOF on stdin does too)

"Received" is the moment the fake accepted the send (``POST /messages`` validated and
stored), before the configured latency delays its reply.

TCP_NODELAY: ``http.server`` writes a reply's headers and its body in two ``send()`` calls
and leaves Nagle's algorithm on unless told otherwise. On a kept-alive connection the body
then waits for the client's delayed ACK: about 40 ms on every reply, which punishes exactly
the clients that reuse connections (the daemon) and not those that open a new one per
request (the baseline loop, whose fresh connections are still in quick-ACK mode). Production
HTTP servers set TCP_NODELAY, and so does this helper (the bundled handler does too, since
it learned to); ``--nagle`` turns it off, to show the difference.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from typing import Any

from daemon.fake.api import FakeApi
from daemon.fake.http import Handler
from daemon.fake.rules import Faults, ReceivedMessage


class NoDelayHandler(Handler):
    """The bundled request handler, with TCP_NODELAY on its connection."""

    disable_nagle_algorithm = True


class NagleHandler(Handler):
    """The bundled request handler, with Nagle's algorithm left on."""

    disable_nagle_algorithm = False


class RecordingApi(FakeApi):
    """A FakeApi that also notes the wall-clock time each new message was created."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times: dict[str, float] = {}
        self.first: float | None = None
        #: Messages created (repeats not counted), kept as a number: the bundled
        #: ``wait_for_messages`` recounts every message on each change, which at 100,000
        #: messages would make this process, not the daemon, the bottleneck.
        self.created_count = 0

    def create_message(self, payload: object, key: str | None) -> dict[str, object]:
        reply = super().create_message(payload, key)
        now = time.time()
        message_id = str(reply["id"])
        with self._lock:
            if message_id not in self.times:
                self.times[message_id] = now
                self.created_count += 1
            if self.first is None:
                self.first = now
        return reply

    def wait_count(self, n: int, timeout: float) -> int:
        """Wait until ``n`` messages were created (or the timeout); how many there are."""
        deadline = time.monotonic() + timeout
        while self.created_count < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.created_count

    def use_handler(self, handler: type[Handler]) -> None:
        """Serve later connections with ``handler`` (call right after start)."""
        assert self._server is not None
        self._server.RequestHandlerClass = handler

    def created(self) -> list[ReceivedMessage]:
        return [m for m in self.messages() if not m.duplicate]

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._attachments.clear()
            self._message_by_key.clear()
            self._replies.clear()
            self._requests.clear()
            self.times.clear()
            self.first = None
            self.created_count = 0


def _dump(api: RecordingApi) -> dict[str, Any]:
    with api._lock:
        times = dict(api.times)
    rows = []
    for message in api.created():
        rows.append(
            {
                "id": message.id,
                "conversation_id": message.conversation_id,
                "filename": message.attachments[0].filename if message.attachments else None,
                "size": message.attachments[0].size if message.attachments else None,
                "t": times.get(message.id),
                "idempotency_key": message.idempotency_key,
            }
        )
    return {"messages": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    parser.add_argument("--tenant-id", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds, every API reply")
    parser.add_argument(
        "--nagle", action="store_true", help="leave Nagle's algorithm on (to show its effect)"
    )
    args = parser.parse_args()

    api = RecordingApi(
        host="127.0.0.1",
        port=args.port,
        token=args.token,
        tenant_id=args.tenant_id,
        faults=Faults(latency_s=args.latency),
    )
    api.start()
    api.use_handler(NagleHandler if args.nagle else NoDelayHandler)
    out_lock = threading.Lock()

    def say(payload: dict[str, Any]) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(payload) + "\n")
            sys.stdout.flush()

    say({"url": api.url})
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            command = words[0]
            if command == "quit":
                break
            if command == "count":
                say({"count": api.created_count})
            elif command == "wait":
                wanted, timeout = int(words[1]), float(words[2])
                say({"count": api.wait_count(wanted, timeout)})
            elif command == "cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                say({"cpu": usage.ru_utime + usage.ru_stime})
            elif command == "first":
                say({"first": api.first})
            elif command == "dump":
                say(_dump(api))
            elif command == "reset":
                api.reset()
                say({"ok": True})
            else:
                say({"error": f"unknown command {command!r}"})
    finally:
        api.stop()
    errors = api.errors()
    if errors:
        print(f"fake API errors: {errors[:5]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
