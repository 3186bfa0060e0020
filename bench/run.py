"""sendseven-watch benchmark: the daemon against the obvious loop, on this machine, in one run.

    python bench/run.py [--quick] [--only NAME ...] [--workers N] [--json out.json]

Starts the bundled fake API in its own process (bench/fakeserver.py) with a per-request
latency, runs each scenario against it on 127.0.0.1, and prints one table: every figure next
to its target, PASS or FAIL. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from daemon.store.archive import move_to_sent
from daemon.store.claims import Owner, drop_claim_folder

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = ROOT / "tests" / "data"
#: The installed console script, next to the interpreter running the benchmark.
COMMAND = str(Path(sys.executable).parent / "sendseven-watch")
TOKEN = "bench-token-0123456789"  # noqa: S105 - the fake API's token for this run
TENANT = "bench-tenant"
#: Longest run of one daemon or baseline process before it is killed, in seconds.
RUN_TIMEOUT = 300.0
#: How long a daemon may take to stop after SIGTERM, in seconds.
STOP_TIMEOUT = 90.0
MB = 1024 * 1024
KB = 1024
SCENARIOS = (
    "cpu",
    "throughput",
    "split",
    "busy",
    "bigfile",
    "latency",
    "backlog",
    "inboxes",
    "idle_inotify",
    "idle_polling",
    "idle_recursive",
)
#: Scenarios too big for the default run (each takes many minutes or a million files):
#: ``--heavy`` adds them, ``--only`` names them.
HEAVY = ("backlog_100k", "backlog_100k_one", "sent_full")
#: Scenarios a ``--quick`` run leaves out, whatever ``--only`` says.
NOT_QUICK = ("inboxes", *HEAVY)


# -- results -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    measure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(
        self, scenario: str, measure: str, value: str, target: str = "", ok: bool | None = None
    ) -> None:
        row = Row(scenario, measure, value, target, ok)
        self.rows.append(row)
        verdict = f"  [{row.verdict}]" if row.verdict else ""
        shown = f"  (target {target})" if target else ""
        log(f"  {scenario}: {measure} = {value}{shown}{verdict}")

    def table(self) -> str:
        header = ("scenario", "measure", "value", "target", "result")
        lines = [header] + [
            (r.scenario, r.measure, r.value, r.target, r.verdict) for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for n, line in enumerate(lines):
            out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_kb = int(line.split()[1])
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    version = "?"
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        version = subprocess.run(
            [COMMAND, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    commit = "?"
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": usable,
        "ram_gb": round(ram_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": f"{platform.system()} {platform.release()}",
        "daemon": version,
        "commit": commit,
    }


# -- sample files ------------------------------------------------------------------------------


def jpeg_bytes(size: int, seed: int = 0) -> bytes:
    """A JPEG of exactly ``size`` bytes: tests/data/image.jpg with COM segments after SOI.

    Each COM (``FF FE``) segment holds up to 65533 bytes of pseudo-random filler; a decoder
    skips it by its length, and the classifier (which reads the header) sees a JPEG.
    """
    original = (DATA / "image.jpg").read_bytes()
    pad = size - len(original)
    if pad < 0:
        raise ValueError(f"a JPEG cannot be smaller than {len(original)} bytes")
    rng = random.Random(seed)
    segments = []
    while pad >= 4:
        # 4 bytes of marker and length, then up to 65533 bytes; never leave 1..3 bytes over.
        body = min(pad - 4, 65533)
        if 0 < pad - 4 - body < 4:
            body -= 4
        segments.append(b"\xff\xfe" + (body + 2).to_bytes(2, "big") + rng.randbytes(body))
        pad -= body + 4
    # Only a file 1..3 bytes longer than the original leaves a remainder: after the EOI.
    return original[:2] + b"".join(segments) + original[2:] + b"\x00" * pad


def write_pdf(path: Path, size: int) -> None:
    """A PDF-headed file of ``size`` bytes: tests/data/document.pdf, then filler after %%EOF."""
    head = (DATA / "document.pdf").read_bytes()
    block = random.Random(1).randbytes(MB)
    with path.open("wb") as out:
        out.write(head)
        left = size - len(head)
        while left > 0:
            chunk = block[: min(left, len(block))]
            out.write(chunk)
            left -= len(chunk)


def fill_inbox(
    inbox: Path, names: Sequence[str], data: bytes, mtimes: Sequence[float] | None = None
) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        path = inbox / name
        path.write_bytes(data)
        if mtimes is not None:
            os.utime(path, (mtimes[n], mtimes[n]))


# -- processes ---------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDSEVEN_")}
    env.pop("NOTIFY_SOCKET", None)
    return env


@dataclass
class Measured:
    """One finished child process: wall time, exit code, peak RSS and CPU (from wait4)."""

    wall: float
    code: int
    max_rss: int  # bytes
    cpu: float  # seconds, user + system
    stdout: str = ""


def wait_measured(process: subprocess.Popen[Any], started: float, timeout: float) -> Measured:
    """Reap ``process`` with wait4(2): its own peak RSS and CPU, as /usr/bin/time reports.

    A process still running after ``timeout`` seconds is killed (a hung daemon must not hang
    the benchmark); its exit code is then -9.
    """
    killer = threading.Timer(timeout, process.kill)
    killer.daemon = True
    killer.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        killer.cancel()
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        wall=wall,
        code=process.returncode,
        max_rss=usage.ru_maxrss * 1024,
        cpu=usage.ru_utime + usage.ru_stime,
    )


def measure(argv: Sequence[str], cwd: Path, log_path: Path, timeout: float) -> Measured:
    """Run ``argv`` to completion; stdout and stderr go to ``log_path``."""
    with log_path.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=clean_env()
        )
        result = wait_measured(process, started, timeout)
    result.stdout = log_path.read_text(errors="replace")
    return result


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class FakeServer:
    """bench/fakeserver.py in its own process; commands over a pipe."""

    #: Leave Nagle's algorithm on in the fake API (bench/fakeserver.py explains why not).
    nagle = False

    def __init__(self, latency: float) -> None:
        argv = [sys.executable, str(BENCH / "fakeserver.py"), "--token", TOKEN]
        argv += ["--tenant-id", TENANT, "--latency", str(latency)]
        if self.nagle:
            argv.append("--nagle")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        self.url: str = self._read()["url"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fake API exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def count(self) -> int:
        return int(self.ask("count")["count"])

    def wait(self, n: int, timeout: float) -> int:
        return int(self.ask(f"wait {n} {timeout}")["count"])

    def messages(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.ask("dump")["messages"]
        return rows

    def reset(self) -> None:
        self.ask("reset")

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def fake_server(latency: float) -> Iterator[FakeServer]:
    server = FakeServer(latency)
    try:
        yield server
    finally:
        server.close()


def write_config(folder: Path, url: str, **overrides: Any) -> Path:
    """A daemon configuration for the spool ``folder/spool`` (the README's configuration keys)."""
    config: dict[str, Any] = {
        "api": {"url": url, "token": TOKEN, "tenant_id": TENANT},
        "spool": str(folder / "spool"),
        # The bench drops one sample's bytes under many names: every one is to be sent.
        "duplicates": "send",
    }
    config.update(overrides)
    (folder / "spool").mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class RunningDaemon:
    """``sendseven-watch run`` (watch mode) in the background, its log in a file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._out = log_path.open("wb")
        self.started_wall = time.time()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [COMMAND, "run", "-c", str(config)],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env=clean_env(),
        )

    def wait_for_event(self, event: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        needle = f'"event": "{event}"'
        while time.monotonic() < deadline:
            if needle in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited: {self.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"no {event} within {timeout}s: {self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])

    def stop(self) -> Measured:
        self.process.send_signal(signal.SIGTERM)
        result = wait_measured(self.process, self.started, STOP_TIMEOUT)
        self._out.close()
        return result


# -- helpers for the figures -------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def fmt_mb(size: float) -> str:
    return f"{size / MB:.1f} MB"


def check_exit(what: str, result: Measured) -> None:
    if result.code != 0:
        tail = "\n".join(result.stdout.splitlines()[-15:])
        raise RuntimeError(f"{what} exited {result.code}:\n{tail}")


def sent_count(spool: Path) -> int:
    return sum(
        len(list((inbox / "sent").iterdir()))
        for inbox in spool.iterdir()
        if (inbox / "sent").is_dir()
    )


@dataclass
class Options:
    quick: bool
    workers: int
    latency: float
    settle: float
    idle_seconds: float
    warmup: float
    repeat: int
    work: Path
    backlog_files: int = 100_000
    sent_files: int = 1_000_000

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full


# -- the scenarios -----------------------------------------------------------------------------


def run_daemon_once(
    folder: Path, url: str, opts: Options, *, workers: int | None = None, **config: Any
) -> Measured:
    path = write_config(
        folder, url, workers=workers or opts.workers, settle_seconds=opts.settle, **config
    )
    argv = [COMMAND, "run", "-c", str(path), "--once"]
    result = measure(argv, folder, folder / "daemon.log", RUN_TIMEOUT)
    check_exit("sendseven-watch run --once", result)
    return result


def run_baseline(folder: Path, url: str, inboxes: Sequence[Path]) -> Measured:
    argv = [sys.executable, str(BENCH / "baseline.py"), "--url", url, "--token", TOKEN]
    argv += ["--tenant-id", TENANT, *map(str, inboxes)]
    result = measure(argv, folder, folder / "baseline.log", RUN_TIMEOUT)
    check_exit("bench/baseline.py", result)
    return result


def run_parallel(folder: Path, url: str, inboxes: Sequence[Path]) -> Measured:
    """The parallel script: one baseline loop per inbox, all started at once, each its own
    process (so each conversation keeps its order, and the loops use every core). Wall:
    first start to last exit; CPU and RSS: the sum over the loops."""
    started = time.monotonic()
    running = []
    for n, inbox in enumerate(inboxes):
        argv = [sys.executable, str(BENCH / "baseline.py"), "--url", url, "--token", TOKEN]
        argv += ["--tenant-id", TENANT, str(inbox)]
        out = (folder / f"parallel-{n}.log").open("wb")
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=folder, env=clean_env()
        )
        running.append((process, out))
    results = []
    for process, out in running:
        results.append(wait_measured(process, started, RUN_TIMEOUT))
        out.close()
    bad = [r.code for r in results if r.code != 0]
    if bad:
        raise RuntimeError(f"parallel baseline loops exited {bad}")
    return Measured(
        wall=max(r.wall for r in results),
        code=0,
        max_rss=sum(r.max_rss for r in results),
        cpu=sum(r.cpu for r in results),
    )


def wait_settled(opts: Options) -> None:
    """Files written just now must be older than settle_seconds, as in 'present at start'."""
    time.sleep(opts.settle + 0.2)


def log_span(log_text: str) -> float:
    """The daemon's own wall time for its files, from its JSON log: from the claim of the
    first file (a ``file_sent`` line's timestamp minus its ``duration_ms``) to the last
    ``file_sent``. Leaves out interpreter start-up, configuration and shutdown."""
    starts: list[float] = []
    ends: list[float] = []
    for line in log_text.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            event = json.loads(line)
            if event.get("event") != "file_sent" or event.get("duration_ms") is None:
                continue
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
            ends.append(stamp)
            starts.append(stamp - float(event["duration_ms"]) / 1000)
    if not ends:
        raise RuntimeError("no file_sent line in the daemon's log")
    return max(ends) - min(starts)


def make_sides(
    folder: Path,
    sides: Sequence[str],
    *,
    conversations: int,
    per_conversation: int,
    mtimes: Callable[[int], list[float]] | None = None,
) -> None:
    """Identical spools ``folder/<side>/spool/conv_NN`` of 150 KB JPEGs, one per side."""
    data = jpeg_bytes(150 * KB)
    names_of = [
        [f"scan_{c:02d}_{(i * 37) % per_conversation:04d}.jpg" for i in range(per_conversation)]
        for c in range(conversations)
    ]
    for side in sides:
        for c in range(conversations):
            stamps = mtimes(per_conversation) if mtimes else None
            fill_inbox(folder / side / "spool" / f"conv_{c:02d}", names_of[c], data, stamps)


@dataclass
class DaemonRuns:
    """Several ``run --once`` of the daemon on identical spools, as measured."""

    runs: list[Measured] = field(default_factory=list)
    spans: list[float] = field(default_factory=list)
    kept: bool = True
    api_cpu: list[float] = field(default_factory=list)
    """The fake API process's CPU seconds during each run."""

    def __iadd__(self, other: DaemonRuns) -> DaemonRuns:
        self.runs += other.runs
        self.spans += other.spans
        self.kept = self.kept and other.kept
        self.api_cpu += other.api_cpu
        return self

    @property
    def span(self) -> float:
        return statistics.median(self.spans)

    @property
    def wall(self) -> float:
        return statistics.median(run.wall for run in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(run.cpu for run in self.runs)

    def raw(self) -> list[dict[str, Any]]:
        return [asdict(run) | {"stdout": ""} for run in self.runs]


def daemon_runs(
    server: FakeServer,
    folder: Path,
    sides: Sequence[str],
    opts: Options,
    total: int,
    *,
    workers: int | None = None,
    name: str = "",
) -> DaemonRuns:
    """``run --once`` on each side's spool in turn; checks every file arrived, in order."""
    found = DaemonRuns()
    for side in sides:
        server.reset()
        spool = folder / side / "spool"
        expected = expected_order(spool)
        log(f"[{name}] daemon run --once (workers={workers or opts.workers}), {side} …")
        api_before = proc_cpu_seconds(server.process.pid)
        run = run_daemon_once(folder / side, server.url, opts, workers=workers)
        found.api_cpu.append(proc_cpu_seconds(server.process.pid) - api_before)
        received = server.messages()
        if len(received) != total or sent_count(spool) != total:
            raise RuntimeError(f"daemon delivered {len(received)} of {total}")
        got: dict[str, list[str]] = {}
        for row in received:
            got.setdefault(row["conversation_id"], []).append(row["filename"])
        found.kept = found.kept and got == expected
        found.runs.append(run)
        found.spans.append(log_span(run.stdout))
    return found


def expected_order(spool: Path) -> dict[str, list[str]]:
    """Per conversation, the file names in the order the README promises: mtime, then name."""
    order = {}
    for inbox in spool.iterdir():
        files = [(p.stat().st_mtime_ns, p.name) for p in inbox.iterdir() if p.is_file()]
        order[inbox.name] = [name for _, name in sorted(files)]
    return order


def per_file_ms(seconds: float, files: int) -> str:
    return f"{seconds / files * 1000:.2f} ms"


def scenario_cpu(report: Report, opts: Options) -> None:
    """CPU per file of the daemon process alone, at 0 ms latency (the fake API's own CPU is
    in its process and measured apart)."""
    conversations, per = 10, opts.scale(50, 10)
    total = conversations * per
    runs = max(opts.repeat, 3) if not opts.quick else 1
    folder = opts.work / "cpu"
    sides = [f"daemon{n}" for n in range(runs)]
    make_sides(folder, sides, conversations=conversations, per_conversation=per)
    wait_settled(opts)
    (folder / "empty" / "spool" / "conv_00").mkdir(parents=True)
    with fake_server(0.0) as server:
        found = daemon_runs(server, folder, sides, opts, total, name="cpu")
        log("[cpu] daemon run --once on an empty spool (start-up and shutdown) …")
        empty = [run_daemon_once(folder / "empty", server.url, opts) for _ in range(runs)]
    cpus = [run.cpu for run in found.runs]
    cpu = statistics.median(cpus)
    spread = f" (runs {min(cpus) / total * 1000:.2f}-{max(cpus) / total * 1000:.2f} ms)"
    report.add(
        "cpu",
        f"daemon user+sys per file, {total} files, 0 ms, workers={opts.workers} (median)",
        per_file_ms(cpu, total) + (spread if len(cpus) > 1 else ""),
        "<= 2.0 ms",
        cpu / total <= 0.002,
    )
    idle = statistics.median(run.cpu for run in empty)
    report.add(
        "cpu",
        "of which start-up and shutdown (run --once, no files; median)",
        f"{fmt_s(idle)} = {per_file_ms(idle, total)} per file",
    )
    report.add(
        "cpu",
        "fake API process per file (not counted above)",
        per_file_ms(max(found.api_cpu), total),
    )
    report.add("cpu", "daemon process wall (median)", fmt_s(found.wall))
    report.raw["cpu"] = {
        "daemon": found.raw(),
        "empty": [asdict(run) | {"stdout": ""} for run in empty],
        "fake_api_cpu": found.api_cpu,
    }


def spread(values: Sequence[float]) -> str:
    """The range of several measurements (", 3 runs 3.32-3.58 s"); nothing for one."""
    if len(values) < 2:
        return ""
    return f", {len(values)} runs {min(values):.2f}-{max(values):.2f} s"


def wire_floor(files: int, per_conversation: int, latency: float, workers: int) -> float:
    """The least time the requests take on the wire: 2 per file over ``workers`` at once,
    and no less than one conversation's sends in a row after its first upload."""
    return max(files * 2 * latency / workers, (per_conversation + 1) * latency)


def report_least_wall(
    report: Report,
    scenario: str,
    label: str,
    *,
    cpu: float,
    api_cpu: float,
    serial: float,
    parallel_wall: float,
    total: int,
) -> None:
    """What the machine allows: the daemons' CPU (``cpu``) and the fake API's, both needed
    for these files, cannot take less wall than their sum spread perfectly over every core,
    except ``serial`` seconds of it that run on one core while nothing else has work (one
    daemon's start-up and shutdown; none where a daemon starts on each core). Printed with
    the parallel script's wall over it: the most such a design could be ahead."""
    cores = os.cpu_count() or 1
    least = serial + (cpu - serial + api_cpu) / cores
    on_one = f", start-up and shutdown ({fmt_s(serial)}) on one" if serial else ""
    report.add(
        scenario,
        f"{label}: least wall for {'its' if serial else 'their'} CPU and the fake API's on "
        f"{cores} cores{on_one}; parallel script / that",
        f"{fmt_s(least)} ({per_file_ms(cpu, total)} + {per_file_ms(api_cpu, total)} "
        f"per file); {parallel_wall / least:.2f}x",
    )


def scenario_throughput(report: Report, opts: Options) -> None:
    """The 500 files at 20 ms: the baseline once; then, ``--repeat`` rounds of the parallel
    script and the daemon at 4, 8 and 16 workers, one after another in each round, so that
    a slow minute of a shared machine falls on every side alike, not on one of them."""
    conversations, per = 10, opts.scale(50, 10)
    total = conversations * per
    pool = (4, 8, 16)
    folder = opts.work / "throughput"
    rounds = range(opts.repeat)
    daemon_sides = {w: [f"daemon_w{w}_{n}" for n in rounds] for w in pool}
    parallel_sides = [f"parallel_{n}" for n in rounds]
    sides = ["baseline", *parallel_sides, *(s for w in pool for s in daemon_sides[w])]
    make_sides(folder, sides, conversations=conversations, per_conversation=per)
    (folder / "empty" / "spool" / "conv_00").mkdir(parents=True)
    wait_settled(opts)
    found = {w: DaemonRuns() for w in pool}
    parallels: list[Measured] = []
    empty: list[Measured] = []
    with fake_server(opts.latency) as server:
        log(f"[throughput] baseline loop: {total} files …")
        base = run_baseline(
            folder / "baseline", server.url, sorted((folder / "baseline" / "spool").iterdir())
        )
        if server.count() != total:
            raise RuntimeError(f"baseline delivered {server.count()} of {total}")
        for n in rounds:
            server.reset()
            log(f"[throughput] parallel script: {conversations} loops at once, round {n} …")
            side = folder / parallel_sides[n]
            parallels.append(run_parallel(side, server.url, sorted((side / "spool").iterdir())))
            if server.count() != total:
                raise RuntimeError(f"parallel script delivered {server.count()} of {total}")
            for w in pool:
                found[w] += daemon_runs(
                    server, folder, [daemon_sides[w][n]], opts, total, workers=w, name="throughput"
                )
            log("[throughput] daemon run --once on an empty spool (start-up and shutdown) …")
            empty.append(run_daemon_once(folder / "empty", server.url, opts))
    parallel = Measured(
        wall=statistics.median(m.wall for m in parallels),
        code=0,
        max_rss=max(m.max_rss for m in parallels),
        cpu=statistics.median(m.cpu for m in parallels),
    )
    report.add(
        "throughput",
        f"baseline loop, {total} files in {conversations} conversations",
        f"{fmt_s(base.wall)} ({total / base.wall:.1f} files/s; CPU "
        f"{per_file_ms(base.cpu, total)}/file)",
    )
    report.add(
        "throughput",
        f"parallel script ({conversations} loops at once; median)",
        f"{fmt_s(parallel.wall)} ({total / parallel.wall:.1f} files/s; CPU "
        f"{per_file_ms(parallel.cpu, total)}/file)" + spread([m.wall for m in parallels]),
    )
    for w in pool:
        runs = found[w]
        floor = wire_floor(total, per, opts.latency, w)
        ratio = runs.span / floor
        report.add(
            "throughput",
            f"workers={w}: daemon wall, first claim to last sent (median)",
            f"{fmt_s(runs.span)}{spread(runs.spans)}; process wall {fmt_s(runs.wall)}",
        )
        report.add(
            "throughput",
            f"workers={w}: daemon wall / wire floor {floor:.2f} s",
            f"{ratio:.2f}x",
            "<= 1.3x",
            ratio <= 1.3,
        )
        report.add(
            "throughput",
            f"workers={w}: speed-up vs baseline (process walls); CPU per file",
            f"{base.wall / runs.wall:.1f}x; {per_file_ms(runs.cpu, total)}",
        )
    spans = [found[w].span for w in pool]
    monotone = all(later <= earlier for earlier, later in itertools.pairwise(spans))
    report.add(
        "throughput",
        "adding workers never makes it slower (" + " >= ".join(f"w{w}" for w in pool) + ")",
        " / ".join(f"{s:.2f}" for s in spans) + " s",
        "yes",
        monotone,
    )
    best = found[pool[-1]]
    ahead = parallel.wall / best.wall
    report.add(
        "throughput",
        f"workers={pool[-1]} vs parallel script (process walls, medians)",
        f"{ahead:.1f}x",
        ">= 2x",
        ahead >= 2,
    )
    report_least_wall(
        report,
        "throughput",
        f"workers={pool[-1]}",
        cpu=best.cpu,
        api_cpu=statistics.median(best.api_cpu),
        serial=statistics.median(run.cpu for run in empty),
        parallel_wall=parallel.wall,
        total=total,
    )
    kept = all(runs.kept for runs in found.values())
    n = sum(len(runs.runs) for runs in found.values())
    report.add(
        "throughput",
        f"order kept in each conversation ({n} runs)",
        "yes" if kept else "NO",
        "yes",
        kept,
    )
    report.raw["throughput"] = {
        "baseline": asdict(base) | {"stdout": ""},
        "parallel": [asdict(m) for m in parallels],
        "empty": [asdict(run) | {"stdout": ""} for run in empty],
        "daemon": {str(w): found[w].raw() for w in pool},
        "fake_api_cpu": {str(w): found[w].api_cpu for w in pool},
        "spans": {str(w): found[w].spans for w in pool},
    }


def run_daemons_split(
    folder: Path, url: str, opts: Options, parts: int, workers: int
) -> tuple[Measured, float]:
    """``parts`` daemons at once, each ``run --once`` on its own share of the conversations
    (``folder/part<n>``: its own spool, state_dir and ``workers``). Wall: first start to last
    exit; CPU and RSS: the sum; and the span of their logs together (first claim to last
    ``file_sent``)."""
    started = time.monotonic()
    running = []
    for n in range(parts):
        part = folder / f"part{n}"
        config = write_config(part, url, workers=workers, settle_seconds=opts.settle)
        out = (part / "daemon.log").open("wb")
        process = subprocess.Popen(
            [COMMAND, "run", "-c", str(config), "--once"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=part,
            env=clean_env(),
        )
        running.append((process, out))
    results = []
    for process, out in running:
        results.append(wait_measured(process, started, RUN_TIMEOUT))
        out.close()
    for result in results:
        check_exit("sendseven-watch run --once (split)", result)
    logs = "\n".join((folder / f"part{n}" / "daemon.log").read_text() for n in range(parts))
    joined = Measured(
        wall=max(r.wall for r in results),
        code=0,
        max_rss=sum(r.max_rss for r in results),
        cpu=sum(r.cpu for r in results),
    )
    return joined, log_span(logs)


def scenario_split(report: Report, opts: Options) -> None:
    """The design that uses both cores: one daemon process per core, the conversations
    split between them (each conversation in one process, so its order holds), against
    one daemon with all the workers and against the parallel script, on the same files:
    ``--repeat`` rounds of the three, one after another in each round."""
    conversations, per, parts = 10, opts.scale(50, 10), 2
    total = conversations * per
    folder = opts.work / "split"
    rounds = range(opts.repeat)
    sides = [f"{kind}{n}" for n in rounds for kind in ("parallel", "one", "split")]
    make_sides(folder, sides, conversations=conversations, per_conversation=per)
    for n in rounds:
        side = folder / f"split{n}"
        for c, inbox in enumerate(sorted((side / "spool").iterdir())):
            target = side / f"part{c % parts}" / "spool"
            target.mkdir(parents=True, exist_ok=True)
            inbox.rename(target / inbox.name)
    wait_settled(opts)
    workers = opts.workers
    parallels: list[Measured] = []
    one = DaemonRuns()
    splits: list[tuple[Measured, float]] = []
    split_api: list[float] = []
    with fake_server(opts.latency) as server:
        for n in rounds:
            server.reset()
            log(f"[split] parallel script: {conversations} loops at once, round {n} …")
            side = folder / f"parallel{n}"
            parallels.append(run_parallel(side, server.url, sorted((side / "spool").iterdir())))
            if server.count() != total:
                raise RuntimeError(f"parallel script delivered {server.count()} of {total}")
            one += daemon_runs(server, folder, [f"one{n}"], opts, total, name="split")
            server.reset()
            log(f"[split] {parts} daemons at once, workers={workers // parts} each, split{n} …")
            api_before = proc_cpu_seconds(server.process.pid)
            splits.append(
                run_daemons_split(folder / f"split{n}", server.url, opts, parts, workers // parts)
            )
            split_api.append(proc_cpu_seconds(server.process.pid) - api_before)
            if server.count() != total:
                raise RuntimeError(f"split daemons delivered {server.count()} of {total}")
    parallel_wall = statistics.median(m.wall for m in parallels)
    walls = [m.wall for m, _ in splits]
    spans = [span for _, span in splits]
    wall, span = statistics.median(walls), statistics.median(spans)
    cpu = statistics.median(m.cpu for m, _ in splits)
    floor = wire_floor(total, per, opts.latency, workers)
    report.add(
        "split",
        f"{parts} daemons, {conversations // parts} conversations and workers={workers // parts}"
        " each: first claim to last sent (median)",
        f"{fmt_s(span)}; process wall {fmt_s(wall)}; CPU {per_file_ms(cpu, total)}/file",
    )
    report.add(
        "split",
        f"{parts} daemons: wall / wire floor {floor:.2f} s (workers={workers} in all)",
        f"{span / floor:.2f}x (one daemon: {one.span / floor:.2f}x)",
        "<= 1.3x",
        span / floor <= 1.3,
    )
    report.add(
        "split",
        f"{parts} daemons vs parallel script (process walls, medians)",
        f"{parallel_wall / wall:.1f}x (one daemon: {parallel_wall / one.wall:.1f}x)",
        ">= 2x",
        parallel_wall / wall >= 2,
    )
    # Their start-ups run side by side, one daemon per core (a bound that is only looser
    # where cores outnumber the daemons).
    report_least_wall(
        report,
        "split",
        f"{parts} daemons",
        cpu=cpu,
        api_cpu=statistics.median(split_api),
        serial=0.0,
        parallel_wall=parallel_wall,
        total=total,
    )
    report.raw["split"] = {
        "parallel": [asdict(m) for m in parallels],
        "one": one.raw(),
        "split": [asdict(m) | {"span": s} for m, s in splits],
        "fake_api_cpu": split_api,
    }


def scenario_busy(report: Report, opts: Options) -> None:
    per = opts.scale(200, 50)
    base_time = time.time() - 3600

    def stamps(n: int) -> list[float]:
        return [base_time + i for i in range(n)]

    folder = opts.work / "busy"
    daemon_sides = [f"daemon{n}" for n in range(opts.repeat)]
    make_sides(
        folder, ["baseline", *daemon_sides], conversations=1, per_conversation=per, mtimes=stamps
    )
    wait_settled(opts)
    with fake_server(opts.latency) as server:
        log(f"[busy] baseline loop: {per} files …")
        base = run_baseline(
            folder / "baseline", server.url, sorted((folder / "baseline" / "spool").iterdir())
        )
        found = daemon_runs(server, folder, daemon_sides, opts, per, name="busy")
    # Each send waits for the previous reply (the API promises no order for concurrent
    # requests), so no ordered sender beats this floor.
    floor = per * opts.latency
    ratio = found.span / floor
    report.add("busy", f"baseline loop, {per} files, one conversation", fmt_s(base.wall))
    report.add(
        "busy",
        f"daemon wall, first claim to last sent, workers={opts.workers} (median)",
        f"{fmt_s(found.span)}{spread(found.spans)}; process wall {fmt_s(found.wall)}",
    )
    report.add("busy", "sequential-send floor (files x latency)", fmt_s(floor))
    report.add("busy", "daemon wall / floor", f"{ratio:.2f}x", "<= 1.15x", ratio <= 1.15)
    report.add(
        "busy",
        "speed-up vs baseline (process walls); ceiling for any ordered sender",
        f"{base.wall / found.wall:.1f}x; {base.wall / floor:.1f}x",
    )
    report.add(
        "busy",
        f"order kept ({len(found.runs)} runs)",
        "yes" if found.kept else "NO",
        "yes",
        found.kept,
    )
    report.raw["busy"] = {
        "baseline": asdict(base) | {"stdout": ""},
        "daemon": found.raw(),
        "spans": found.spans,
    }


def _curl_upload_and_send(url: str, path: Path, folder: Path) -> float:
    auth = ["-H", f"Authorization: Bearer {TOKEN}", "-H", f"X-Tenant-ID: {TENANT}"]
    started = time.monotonic()
    upload = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            *auth,
            "-F",
            f"file=@{path};type=application/pdf",
            f"{url}/attachments",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
    )
    attachment = json.loads(upload.stdout)["id"]
    body = json.dumps(
        {"conversation_id": "conv_big", "message_type": "document", "attachments": [attachment]}
    )
    send = ["curl", "-sS", "--fail-with-body", "-o", os.devnull, *auth]
    send += ["-H", "Content-Type: application/json", "--data-binary", body, f"{url}/messages"]
    subprocess.run(send, capture_output=True, check=True, cwd=folder)
    return time.monotonic() - started


def file_durations(log_text: str) -> list[float]:
    """Seconds from claim to sent of each ``file_sent`` line in a daemon log."""
    found = []
    for line in log_text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "file_sent":
                found.append(float(event["duration_ms"]) / 1000)
    return found


def scenario_bigfile(report: Report, opts: Options) -> None:
    size = opts.scale(95, 20) * MB
    folder = opts.work / "bigfile"
    sample = folder / "big.pdf"
    folder.mkdir(parents=True)
    write_pdf(sample, size)
    sides = ["baseline", *(f"daemon{n}" for n in range(opts.repeat))]
    for side in sides:
        (folder / side / "spool" / "conv_big").mkdir(parents=True)
        shutil.copyfile(sample, folder / side / "spool" / "conv_big" / "big.pdf")
    wait_settled(opts)
    if shutil.which("curl") is None:
        raise RuntimeError("curl is not installed")
    with fake_server(opts.latency) as server:
        log(f"[bigfile] curl -F, {fmt_mb(size)} …")
        curls = sorted(_curl_upload_and_send(server.url, sample, folder) for _ in range(3))
        log("[bigfile] baseline loop …")
        base = run_baseline(
            folder / "baseline", server.url, [folder / "baseline" / "spool" / "conv_big"]
        )
        runs = []
        for side in sides[1:]:
            log(f"[bigfile] daemon run --once, {side} …")
            runs.append(run_daemon_once(folder / side, server.url, opts))
        received = server.messages()
    sizes = [row["size"] for row in received]
    if sizes != [size] * (len(curls) + len(sides)):
        raise RuntimeError(f"the fake API received sizes {sizes}")
    curl = statistics.median(curls)
    per_file = statistics.median(d for run in runs for d in file_durations(run.stdout))
    wall = statistics.median(run.wall for run in runs)
    peak = max(run.max_rss for run in runs)
    n = f"median of {len(runs)}"
    report.add("bigfile", f"curl -F + send, {size // MB} MB (median of {len(curls)})", fmt_s(curl))
    report.add("bigfile", "baseline loop, process wall", fmt_s(base.wall))
    report.add("bigfile", f"daemon --once, process wall ({n})", fmt_s(wall))
    report.add("bigfile", f"daemon file time, claim to sent ({n})", fmt_s(per_file))
    ratio = per_file / curl
    report.add("bigfile", "daemon file time / curl", f"{ratio:.2f}x", "<= 1.3x", ratio <= 1.3)
    report.add("bigfile", "daemon process wall / curl", f"{wall / curl:.2f}x")
    report.add(
        "bigfile",
        "baseline peak RSS",
        f"{fmt_mb(base.max_rss)} ({base.max_rss / size:.2f}x the file)",
    )
    report.add("bigfile", "daemon peak RSS (max of runs)", fmt_mb(peak), "< 60 MB", peak < 60 * MB)
    report.raw["bigfile"] = {
        "curl_walls": curls,
        "baseline": asdict(base) | {"stdout": ""},
        "daemon": [asdict(run) | {"stdout": ""} for run in runs],
    }


def scenario_latency(report: Report, opts: Options) -> None:
    count = opts.scale(50, 10)
    gap = 0.1
    folder = opts.work / "latency"
    inbox = folder / "spool" / "conv_latency"
    inbox.mkdir(parents=True)
    data = jpeg_bytes(150 * KB)
    with fake_server(opts.latency) as server:
        config = write_config(folder, server.url, workers=opts.workers, settle_seconds=opts.settle)
        daemon = RunningDaemon(config, folder / "daemon.log")
        try:
            daemon.wait_for_event("daemon_started", 30)
            time.sleep(0.5)
            dropped: dict[str, float] = {}
            log(f"[latency] dropping {count} files, one every {gap * 1000:.0f} ms …")
            for i in range(count):
                name = f"drop_{i:03d}.jpg"
                temp = inbox / f".{name}.tmp"
                temp.write_bytes(data)
                temp.rename(inbox / name)
                dropped[name] = time.time()
                time.sleep(gap)
            got = server.wait(count, 60 + opts.settle)
            received = server.messages()
        finally:
            daemon.stop()
    if got < count:
        raise RuntimeError(f"only {got} of {count} files arrived: {daemon.tail()}")
    latencies = [row["t"] - dropped[row["filename"]] - opts.settle for row in received]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    report.add(
        "latency",
        f"settle_seconds (config), {count} drops {gap * 1000:.0f} ms apart",
        f"{opts.settle:g} s",
    )
    report.add(
        "latency", "p50 drop -> received, minus settle", fmt_ms(p50), "<= 100 ms", p50 <= 0.100
    )
    report.add(
        "latency", "p99 drop -> received, minus settle", fmt_ms(p99), "<= 300 ms", p99 <= 0.300
    )
    report.raw["latency"] = {"latencies_s": latencies}


def _drain(
    report: Report,
    opts: Options,
    name: str,
    *,
    count: int,
    conversations: int,
    rss_target: int,
    latency: float | None = None,
    judged: bool = True,
) -> float:
    """A backlog of ``count`` 16 KB JPEGs over ``conversations`` inboxes, present before
    ``run`` (watch mode) starts; runs until all are sent. Returns files/s."""
    folder = opts.work / name
    data = jpeg_bytes(16 * KB)
    folder = folder / str(count)
    latency = opts.latency if latency is None else latency
    log(f"[{name}] writing {count} files in {conversations} inboxes …")
    for c in range(conversations):
        names = [f"old_{i:06d}.jpg" for i in range(c, count, conversations)]
        fill_inbox(folder / "spool" / f"conv_{c:03d}", names, data)
    wait_settled(opts)
    with fake_server(latency) as server:
        config = write_config(folder, server.url, workers=opts.workers, settle_seconds=opts.settle)
        log(f"[{name}] daemon run (watch mode) until the backlog is sent …")
        daemon = RunningDaemon(config, folder / "daemon.log")
        try:
            got = server.wait(count, RUN_TIMEOUT * 10)
            drained = time.time() - daemon.started_wall
            first = server.ask("first")["first"]
        finally:
            result = daemon.stop()
    if got < count or first is None:
        raise RuntimeError(f"only {got} of {count} files arrived: {daemon.tail()}")
    to_first = first - daemon.started_wall
    rate = count / drained
    where = f"{conversations} inboxes" if conversations > 1 else "one inbox"
    at = f", {latency * 1000:g} ms" if latency != opts.latency else ""
    report.add(
        name,
        f"{count} files (16 KB JPEG) in {where}{at} at start: time to first send",
        fmt_s(to_first),
        "< 2 s" if judged else "",
        to_first < 2 if judged else None,
    )
    report.add(name, f"{count} files: all sent after", f"{fmt_s(drained)} ({rate:.0f} files/s)")
    report.add(
        name,
        f"{count} files: daemon peak RSS",
        fmt_mb(result.max_rss),
        f"< {rss_target // MB} MB" if judged else "",
        result.max_rss < rss_target if judged else None,
    )
    state = folder / "spool" / ".state"
    journal = sum(p.stat().st_size for p in state.glob("journal.sqlite3*"))
    status_started = time.monotonic()
    status = subprocess.run(
        [COMMAND, "status", "-c", str(config)],
        capture_output=True,
        cwd=folder,
        env=clean_env(),
        timeout=RUN_TIMEOUT,
        check=False,
    )
    status_wall = time.monotonic() - status_started
    report.add(name, f"{count} files: journal size (with its WAL)", fmt_mb(journal))
    report.add(name, f"{count} files: `status` wall (exit {status.returncode})", fmt_s(status_wall))
    report.raw[f"{name}/{count}"] = {
        "rate": rate,
        "to_first": to_first,
        "daemon": asdict(result) | {"stdout": ""},
        "journal_bytes": journal,
        "status_s": status_wall,
    }
    return rate


def scenario_backlog(report: Report, opts: Options) -> None:
    _drain(
        report,
        opts,
        "backlog",
        count=opts.scale(10_000, 1_000),
        conversations=10,
        rss_target=120 * MB,
    )


def _scaled(report: Report, opts: Options, name: str, conversations: int, latency: float) -> None:
    """``--backlog-files`` (100,000) files, and a tenth of them first in the same layout at
    the same latency: the files/s of the big one is judged against the small one's."""
    small = _drain(
        report,
        opts,
        name,
        count=opts.backlog_files // 10,
        conversations=conversations,
        rss_target=150 * MB,
        latency=latency,
        judged=False,
    )
    rate = _drain(
        report,
        opts,
        name,
        count=opts.backlog_files,
        conversations=conversations,
        rss_target=150 * MB,
        latency=latency,
    )
    ratio = rate / small
    report.add(
        name,
        f"files/s vs {opts.backlog_files // 10} files ({small:.0f} files/s)",
        f"{ratio:.2f}x",
        ">= 0.8x",
        ratio >= 0.8,
    )


def scenario_backlog_100k(report: Report, opts: Options) -> None:
    _scaled(report, opts, "backlog_100k", 100, opts.latency)


def scenario_backlog_100k_one(report: Report, opts: Options) -> None:
    # One conversation sends one file at a time: at 20 ms that is the wire's 50 files/s
    # whatever the backlog, and 100,000 files would take most of an hour. At 0 ms the run
    # is bound by the daemon's own cost per file, which is what this row is about.
    _scaled(report, opts, "backlog_100k_one", 1, 0.0)


def _time_archive(inbox: Path, names: Sequence[str], data: bytes) -> list[float]:
    """Seconds per file of the daemon's archive step (:func:`move_to_sent` on a claim),
    one figure per batch of 100 files."""
    owner = Owner()
    per_batch = []
    try:
        for start in range(0, len(names), 100):
            claims = []
            for name in names[start : start + 100]:
                (inbox / name).write_bytes(data)
                claim = owner.claim(inbox, name)
                if claim is None:
                    raise RuntimeError(f"could not claim {name}")
                claims.append(claim)
            began = time.perf_counter()
            for claim in claims:
                move_to_sent(claim)
            per_batch.append((time.perf_counter() - began) / len(claims))
            for claim in claims:
                drop_claim_folder(claim)
    finally:
        owner.release()
    return per_batch


def scenario_sent_full(report: Report, opts: Options) -> None:
    """The archive step into a ``sent/`` holding a million files (empty ones: only the
    directory's size matters), among them the names that arrive, against one holding only
    those names: both take ``name (1).jpg`` for every file, so that the size of ``sent/``
    is the one difference. And into an empty ``sent/``, for what a name in use costs."""
    wanted = opts.sent_files
    free = shutil.disk_usage(opts.work)
    inodes = os.statvfs(opts.work).f_favail
    count = min(wanted, inodes // 4)
    if count < wanted:
        log(f"[sent_full] only {inodes} inodes free: {count} files in sent/, not {wanted}")
    folder = opts.work / "sent_full"
    arriving = [f"scan_{i:05d}.jpg" for i in range(opts.scale(2000, 200))]
    data = jpeg_bytes(16 * KB)
    figures = {}
    for label, size in (("empty", 0), ("names", len(arriving)), ("full", count)):
        inbox = folder / label / "conv_00"
        sent = inbox / "sent"
        sent.mkdir(parents=True)
        if size:
            log(f"[sent_full] {size} empty files in sent/ (disk: {free.free // MB} MB free) …")
            for i in range(size - len(arriving)):
                os.close(os.open(sent / f"old_{i:07d}.jpg", os.O_CREAT | os.O_WRONLY, 0o644))
            for name in arriving:  # the same names again: each arrival takes "name (1).jpg"
                (sent / name).touch()
            # Written back before the timing: a sent/ fills over months, and the timed
            # syncs must not wait for the writeback of a million files created just now.
            os.sync()
        log(f"[sent_full] archiving {len(arriving)} files into the {label} sent/ …")
        figures[label] = statistics.median(_time_archive(inbox, arriving, data))
    ratio = figures["full"] / figures["names"]
    report.add(
        "sent_full",
        "archive step per file, empty sent/ (median of batches)",
        f"{figures['empty'] * 1e6:.0f} us",
    )
    report.add(
        "sent_full",
        f"archive step per file, sent/ holding the {len(arriving)} names that arrive "
        "(each file takes name (1).jpg)",
        f"{figures['names'] * 1e6:.0f} us ({figures['names'] / figures['empty']:.2f}x empty)",
    )
    report.add(
        "sent_full",
        f"archive step per file, sent/ holding {count} files, those names among them",
        f"{figures['full'] * 1e6:.0f} us",
    )
    report.add(
        "sent_full",
        f"{count} files / the names alone",
        f"{ratio:.2f}x",
        "<= 1.25x",
        ratio <= 1.25,
    )
    report.raw["sent_full"] = {"per_file_s": figures, "files": count}


def scenario_inboxes(report: Report, opts: Options) -> None:
    """2,000 empty inboxes under inotify: how long until all are watched, then idle."""
    inboxes = opts.scale(2000, 200)
    folder = opts.work / "inboxes"
    for c in range(inboxes):
        (folder / "spool" / f"conv_{c:04d}").mkdir(parents=True)
    with fake_server(opts.latency) as server:
        config = write_config(
            folder, server.url, workers=opts.workers, settle_seconds=opts.settle, observer="inotify"
        )
        daemon = RunningDaemon(config, folder / "daemon.log")
        try:
            daemon.wait_for_event("daemon_started", 120)
            ready = time.monotonic() - daemon.started
            text = daemon.log_path.read_text(errors="replace")
            watched = started_line(text)
            limited = "watch_limit_reached" in text
            time.sleep(opts.warmup)
            pid = daemon.process.pid
            log(f"[inboxes] measuring CPU for {opts.idle_seconds:g} s …")
            cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
            time.sleep(opts.idle_seconds)
            cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
            rss = proc_rss(pid)
        finally:
            result = daemon.stop()
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    peak = max(rss, result.max_rss)
    all_watched = len(watched.get("inboxes", [])) == inboxes and not limited
    report.add(
        "inboxes",
        f"{inboxes} inboxes, inotify: start to daemon_started (READY)",
        fmt_s(ready),
        "< 10 s",
        ready < 10,
    )
    report.add(
        "inboxes",
        "all watched by inotify (none polled)",
        f"{'yes' if all_watched else 'NO'} (observer {watched.get('observer')})",
        "yes",
        all_watched,
    )
    report.add(
        "inboxes", f"idle CPU over {opts.idle_seconds:g} s", f"{share:.2f}%", "< 1%", share < 1
    )
    report.add("inboxes", "daemon peak RSS", fmt_mb(peak), "< 100 MB", peak < 100 * MB)


def started_line(log_text: str) -> dict[str, Any]:
    for line in log_text.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "daemon_started":
                return event
    return {}


def _idle(
    report: Report,
    opts: Options,
    name: str,
    *,
    observer: str,
    files_per_inbox: int,
    target: float,
    inboxes: int = 100,
    subfolders: int = 0,
    **config_keys: Any,
) -> None:
    folder = opts.work / name
    spool = folder / "spool"
    log(f"[{name}] {inboxes} inboxes x {files_per_inbox} files, {subfolders} subfolders each …")
    for c in range(inboxes):
        inbox = spool / f"conv_{c:03d}"
        inbox.mkdir(parents=True)
        for i in range(files_per_inbox):
            (inbox / f"download_{i:04d}.pdf.part").touch()
        for i in range(subfolders):
            (inbox / f"{2000 + i // 12:04d}-{1 + i % 12:02d}").mkdir()
    with fake_server(opts.latency) as server:
        config = write_config(
            folder,
            server.url,
            workers=opts.workers,
            settle_seconds=opts.settle,
            observer=observer,
            **config_keys,
        )
        daemon = RunningDaemon(config, folder / "daemon.log")
        try:
            daemon.wait_for_event("daemon_started", 120)
            time.sleep(opts.warmup)
            pid = daemon.process.pid
            log(f"[{name}] measuring CPU for {opts.idle_seconds:g} s …")
            cpu0, t0 = proc_cpu_seconds(pid), time.monotonic()
            time.sleep(opts.idle_seconds)
            cpu1, t1 = proc_cpu_seconds(pid), time.monotonic()
            rss = proc_rss(pid)
            sent = server.count()
        finally:
            result = daemon.stop()
    if sent:
        raise RuntimeError(f"the idle daemon sent {sent} messages")
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    files = inboxes * files_per_inbox
    what = (
        f"CPU over {opts.idle_seconds:g} s, {inboxes} inboxes"
        + (f" x {files_per_inbox} files" if files else "")
        + (f" x {subfolders} subfolders (recursive)" if subfolders else "")
    )
    report.add(name, what, f"{share:.2f}%", f"< {target:g}%", share < target)
    report.add(name, "daemon peak RSS", fmt_mb(max(rss, result.max_rss)))


def scenario_idle_inotify(report: Report, opts: Options) -> None:
    _idle(report, opts, "idle_inotify", observer="inotify", files_per_inbox=0, target=1.0)


def scenario_idle_polling(report: Report, opts: Options) -> None:
    _idle(
        report,
        opts,
        "idle_polling",
        observer="polling",
        files_per_inbox=opts.scale(1000, 100),
        target=5.0,
    )


def scenario_idle_recursive(report: Report, opts: Options) -> None:
    """A scanner's tree: one recursive inbox with 1,000 subfolders, every one watched."""
    _idle(
        report,
        opts,
        "idle_recursive",
        observer="inotify",
        files_per_inbox=0,
        target=1.0,
        inboxes=1,
        subfolders=opts.scale(1000, 100),
        recursive=True,
        max_depth=2,
    )


RUNNERS: dict[str, Callable[[Report, Options], None]] = {
    "cpu": scenario_cpu,
    "throughput": scenario_throughput,
    "split": scenario_split,
    "busy": scenario_busy,
    "bigfile": scenario_bigfile,
    "latency": scenario_latency,
    "backlog": scenario_backlog,
    "inboxes": scenario_inboxes,
    "idle_inotify": scenario_idle_inotify,
    "idle_polling": scenario_idle_polling,
    "idle_recursive": scenario_idle_recursive,
    "backlog_100k": scenario_backlog_100k,
    "backlog_100k_one": scenario_backlog_100k_one,
    "sent_full": scenario_sent_full,
}


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, short idle windows (a smoke run)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=(*SCENARIOS, *HEAVY, "idle"),
        help=f"run only these: {', '.join((*SCENARIOS, *HEAVY))}, idle",
    )
    parser.add_argument(
        "--heavy",
        action="store_true",
        help=f"also the big ones ({', '.join(HEAVY)}): tens of minutes more",
    )
    parser.add_argument(
        "--backlog-files",
        type=int,
        default=100_000,
        help="files in the backlog_100k scenarios (default 100000)",
    )
    parser.add_argument(
        "--sent-files",
        type=int,
        default=1_000_000,
        help="files already in sent/ for sent_full (default 1000000)",
    )
    parser.add_argument("--workers", type=int, default=16, help="the daemon's workers (default 16)")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.020,
        help="fake API latency per request, seconds (default 0.02)",
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="the daemon's settle_seconds (default 1)"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=None, help="idle CPU window (default 60, quick 5)"
    )
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds after start-up before an idle window"
    )
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="turn Nagle's algorithm back on in the fake API (bench/fakeserver.py says why not)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="daemon runs per comparison, the median is judged (default 3, quick 1)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--tmp", type=Path, default=None, help="where to put the work folder (default: system temp)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(COMMAND).exists():
        print(f"{COMMAND} not found: install the project first (pip install .)", file=sys.stderr)
        return 2
    everything = (*SCENARIOS, *HEAVY)
    selected = list(everything if args.heavy else SCENARIOS)
    if args.only:
        wanted = {
            n
            for name in args.only
            for n in (
                ("idle_inotify", "idle_polling", "idle_recursive") if name == "idle" else (name,)
            )
        }
        selected = [name for name in everything if name in wanted]
    if args.quick:
        skipped = [name for name in selected if name in NOT_QUICK]
        if skipped:
            log(f"--quick leaves out {', '.join(skipped)}")
        selected = [name for name in selected if name not in NOT_QUICK]
    work = Path(tempfile.mkdtemp(prefix="sendseven-bench-", dir=args.tmp))
    opts = Options(
        quick=args.quick,
        workers=args.workers,
        latency=args.latency,
        settle=args.settle,
        idle_seconds=args.idle_seconds
        if args.idle_seconds is not None
        else (5.0 if args.quick else 60.0),
        warmup=args.warmup,
        repeat=args.repeat or (1 if args.quick else 3),
        work=work,
        backlog_files=args.backlog_files,
        sent_files=args.sent_files,
    )
    FakeServer.nagle = args.nagle
    info = machine()
    header = [
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']} GB RAM",
        f"python {info['python']}, {info['kernel']}, {info['daemon']} ({info['commit']})",
        f"fake API: {opts.latency * 1000:g} ms latency per request, "
        + ("Nagle on (--nagle)" if args.nagle else "TCP_NODELAY")
        + f"; daemon: workers={opts.workers}, settle_seconds={opts.settle:g}"
        + ("; QUICK run (sizes reduced, targets indicative)" if opts.quick else ""),
    ]
    print("\n".join(header), flush=True)
    report = Report()
    failures: list[str] = []
    started = time.monotonic()
    try:
        for name in selected:
            log(f"== {name}")
            try:
                RUNNERS[name](report, opts)
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                failures.append(name)
                report.add(name, "ERROR", str(error).splitlines()[0][:80], "", False)
                log(f"[{name}] error: {error}")
    finally:
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(report.table())
    total = time.monotonic() - started
    passed = sum(1 for r in report.rows if r.ok)
    judged = sum(1 for r in report.rows if r.ok is not None)
    print(f"\n{passed}/{judged} targets met; benchmark took {total:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": info,
            "options": {k: str(v) for k, v in asdict(opts).items()},
            "rows": [asdict(r) for r in report.rows],
            "raw": report.raw,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if passed == judged and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
