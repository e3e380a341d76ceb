"""Helpers for hail's Python tests.

Every test stays on loopback: each device is given ``interface="127.0.0.1"`` explicitly
(multicast never leaves through another interface, TTL 1) and links listen on 127.0.0.1.
Each test gets a group port of its own, so tests never hear each other. Every wait is
bounded (``bounded``, process timeouts).
"""

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
# How long any one wait in a test may take before it fails: far above what loopback needs.
BOUND = 10.0

_groups = itertools.count(1)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@pytest.fixture
def group() -> str:
    """A group of this test's own: 239.255.73.N on a free port."""
    return f"239.255.73.{next(_groups) % 250 + 1}:{free_udp_port()}"


def bounded(coro, timeout: float = BOUND):
    """Runs `coro` in a new event loop, failing the test if it takes longer than `timeout`."""

    async def main():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


class _HookedNoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch a socket (`add_reader` raises, as Windows' proactor loop),
    so hail's awaitables complete through `call_soon_threadsafe`, whose callbacks run
    through `hook(callback)` (on the loop's thread) while `hook` is set."""

    hook = None

    def add_reader(self, *args):
        raise NotImplementedError

    def call_soon_threadsafe(self, callback, *args, **kw):
        hook = self.hook
        if hook is None:
            return super().call_soon_threadsafe(callback, *args, **kw)
        return super().call_soon_threadsafe(lambda: hook(lambda: callback(*args)), **kw)


def cancelling(victim, when):
    """A hook for `run_hooked`: with a task in `victim["task"]` (taken, once), it cancels
    the task right before the loop sets the results that came ("before": the wait's future
    is cancelled first, its result has nowhere to go) or right after, before the task
    resumed ("after", as a timeout firing in the same turn of the loop; the result of the
    wait it awaited goes to `victim["got"]`)."""

    def hook(settle):
        task = victim.pop("task", None)
        if task is not None and when == "before":
            task.cancel()
        settle()
        if task is not None and when == "after":
            got = task._fut_waiter  # the wait it awaits
            assert got is not None and got.done(), "the wait's result was set"
            victim["got"] = got.result()
            task.cancel()

    return hook


def run_hooked(path, hook, main):
    """Runs `main()` (bounded) on a loop where the results of hail's awaitables are set
    through `hook(settle)`: through a waker of the test's own ("waker", hail's bridge
    where a loop watches a socket) or through `call_soon_threadsafe` on a loop that
    cannot watch one ("call_soon_threadsafe")."""
    from hail import _aio
    from hail._hail import _LoopWaker

    if path == "waker":

        async def watched():
            loop = asyncio.get_running_loop()
            waker = _LoopWaker()
            _aio._wakers[loop] = waker
            loop.add_reader(waker.fileno(), hook, waker.drain)
            try:
                return await main()
            finally:
                loop.remove_reader(waker.fileno())
                del _aio._wakers[loop]

        return bounded(watched())
    loop = _HookedNoReaderLoop()
    loop.hook = hook
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), BOUND))
    finally:
        loop.close()


async def joined(device, *names, timeout: float = BOUND):
    """Waits (bounded) until every name in `names` is a joined peer of `device`."""

    async def wait():
        events = device.events()
        while not all(n in device.peers() for n in names):
            await events.__anext__()

    await asyncio.wait_for(wait(), timeout)


def wait_until(predicate, timeout: float = BOUND, step: float = 0.01):
    """Polls `predicate`, for state no event tells of (a server's counters). Wait on an
    event or a condition instead wherever there is one."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        # Real time: nothing to wait on but the clock (the state is polled).
        time.sleep(step)


def hail_binary() -> Path:
    """The `hail` command built by cargo: $HAIL_BIN, else target/{debug,release}/hail."""
    if env := os.environ.get("HAIL_BIN"):
        return Path(env)
    root = Path(__file__).resolve().parents[3]
    for profile in ("debug", "release"):
        candidate = root / "target" / profile / "hail"
        if candidate.exists():
            return candidate
    found = shutil.which("hail")
    if found:
        return Path(found)
    pytest.skip("no `hail` binary: build it with `cargo build -p hail-cli` or set HAIL_BIN")


class HailProcess:
    """A `hail --json ...` process on loopback, its stdout read line by line."""

    def __init__(self, args, group, passphrase=None, json=True):
        env = dict(os.environ)
        env.pop("HAIL_PASSPHRASE", None)
        if passphrase is not None:
            env["HAIL_PASSPHRASE"] = passphrase
        cmd = [str(hail_binary()), *(["--json"] if json else []), "--interface", LOOPBACK,
               "--group", group, *args]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        import queue
        import threading

        # A thread reads stdout into a queue, so a wait for a line can be bounded.
        self.lines = queue.Queue()

        def read():
            for line in self.proc.stdout:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=read, daemon=True).start()

    def text_line(self, timeout: float = BOUND) -> str:
        """The next line on stdout, without its newline (bounded)."""
        import queue

        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output from hail within {timeout} s") from None
        if line is None:
            raise AssertionError(f"hail ended: {self.proc.wait(BOUND)}, {self.proc.stderr.read()}")
        return line.rstrip("\n")

    def line(self, timeout: float = BOUND) -> dict:
        """The next JSON line on stdout (bounded)."""
        import json

        return json.loads(self.text_line(timeout))

    def wait_for(self, event: str, timeout: float = BOUND) -> dict:
        import time

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event!r} line from hail within {timeout} s")
            obj = self.line(left)
            if obj.get("event") == event:
                return obj

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(BOUND)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(BOUND)


@pytest.fixture
def hail_process():
    started = []

    def start(args, group, passphrase=None, json=True):
        p = HailProcess(args, group, passphrase, json)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def run_hail(args, group, passphrase=None, timeout: float = BOUND) -> subprocess.CompletedProcess:
    """Runs a one-shot `hail --json` command on loopback (bounded)."""
    env = dict(os.environ)
    env.pop("HAIL_PASSPHRASE", None)
    if passphrase is not None:
        env["HAIL_PASSPHRASE"] = passphrase
    cmd = [str(hail_binary()), "--json", "--interface", LOOPBACK, "--group", group, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
