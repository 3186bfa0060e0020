"""Where the daemon's CPU goes: one ``run --once`` in this process, each thread profiled.

    python bench/cpuprofile.py [--files 500] [--latency 0] [--workers 16] [--top 30]

Writes the same spool as the ``cpu`` scenario of bench/run.py (10 conversations of 150 KB
JPEGs), starts the fake API in its own process (bench/fakeserver.py), then runs the daemon's
command line in this interpreter with a :mod:`cProfile` profiler in every thread, each
timed by ``time.thread_time`` (that thread's CPU, not the wall clock: a thread waiting on a
lock, a socket or an fsync costs nothing here). Prints the process's CPU per file, the CPU of
each thread kind, and the functions with the most CPU of their own and in total, merged over
threads. The profiler adds its own overhead (roughly doubling the figures): read the
shares, not the absolute times; bench/run.py measures those.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import run as bench

from daemon.cli.main import main as daemon_main


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500, help="files, over 10 conversations")
    parser.add_argument("--latency", type=float, default=0.0, help="fake API latency, seconds")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--top", type=int, default=30, help="functions shown per list")
    parser.add_argument("--dump", type=Path, default=None, help="write the merged pstats here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sendseven-profile-"))
    profiles: list[tuple[str, cProfile.Profile]] = []
    guard = threading.Lock()

    def start_in_thread(*_: Any) -> None:
        # Called once in each new thread (threading.setprofile), before its target runs.
        profile = cProfile.Profile(time.thread_time)
        with guard:
            profiles.append((threading.current_thread().name, profile))
        sys.setprofile(None)
        profile.enable()

    try:
        bench.make_sides(work, ["daemon"], conversations=10, per_conversation=args.files // 10)
        time.sleep(1.2)  # settled before the run
        with bench.fake_server(args.latency) as server:
            config = bench.write_config(
                work / "daemon", server.url, workers=args.workers, settle_seconds=1
            )
            log = io.StringIO()
            main_profile = cProfile.Profile(time.thread_time)
            profiles.append(("MainThread", main_profile))
            threading.setprofile(start_in_thread)
            cpu0, wall0 = _cpu(), time.monotonic()
            stdout, sys.stdout = sys.stdout, log
            try:
                main_profile.enable()
                code = daemon_main(["run", "-c", str(config), "--once"])
                main_profile.disable()
            finally:
                sys.stdout = stdout
                threading.setprofile(None)
            cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
            sent = server.count()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for _, profile in profiles:
        profile.disable()
    show(profiles, code=code, sent=sent, wall=wall, cpu=cpu, top=args.top, dump=args.dump)
    return 0 if code == 0 else 1


def show(
    profiles: list[tuple[str, cProfile.Profile]],
    *,
    code: int,
    sent: int,
    wall: float,
    cpu: float,
    top: int,
    dump: Path | None,
) -> None:
    """Print the figures and the merged profile."""
    print(f"exit {code}, {sent} sent; wall {wall:.2f} s; process CPU {cpu:.2f} s ", end="")
    print(f"= {cpu / max(sent, 1) * 1000:.2f} ms per file (profiled)")
    kinds: Counter[str] = Counter()
    merged: pstats.Stats | None = None
    for name, profile in profiles:
        stats = pstats.Stats(profile)
        kinds[re.sub(r"-\d+$", "-N", name)] += stats.total_tt  # type: ignore[attr-defined]
        if merged is None:
            merged = stats
        else:
            merged.add(stats)
    total = sum(kinds.values())
    print(f"\nCPU by thread kind ({total:.2f} s profiled):")
    for name, seconds in kinds.most_common():
        print(f"  {seconds / total * 100:5.1f}%  {seconds:6.2f} s  {name}")
    assert merged is not None
    if dump is not None:
        merged.dump_stats(str(dump))
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        merged.stream = out  # type: ignore[attr-defined]
        merged.sort_stats(order).print_stats(top)
        print(f"\n== by {order}")
        print(out.getvalue().split("\n\n", 1)[-1].strip())


if __name__ == "__main__":
    sys.exit(main())
