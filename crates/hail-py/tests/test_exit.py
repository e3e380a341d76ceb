"""The interpreter exits cleanly while hail's threads are busy.

Each program runs in a process of its own. To make a hail thread want the GIL while the
interpreter finalizes (and not only after the process is gone), an object cleared with
the module's globals (after the interpreter is marked finalizing) sleeps there with the
GIL released. Before `hail` stopped its threads at `atexit` (src/shutdown.rs), the first
program aborted (`Fatal Python error: PyThreadState_Get`) every time.
"""

import subprocess
import sys
import textwrap

from conftest import BOUND, LOOPBACK

# Cleared first of the module's globals (a leading underscore), while the devices still
# stand: it holds the finalizing interpreter for `HOLD` seconds, the GIL released.
FINALIZING = """
import os, sys, time  # cleared after `_finalizing`: no import works while finalizing


class _Finalizing:
    def __del__(self):
        os.write(2, b"finalizing: %r\\n" % sys.is_finalizing())
        # Real time: the finalizing interpreter has nothing else to wait on; a hail
        # thread that would attach does so within this hold.
        time.sleep(HOLD)

_finalizing = _Finalizing()
"""


def run(program: str, tmp_path, **files) -> subprocess.CompletedProcess:
    for name, text in files.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program) + FINALIZING],
        capture_output=True, text=True, timeout=BOUND * 3, cwd=tmp_path,
    )
    assert "finalizing: True" in r.stderr, r.stderr  # the program reached finalization
    assert r.returncode == 0 and "Fatal Python error" not in r.stderr, r.stderr
    assert "panicked" not in r.stderr, r.stderr
    return r


def test_a_plain_handler_still_running_at_exit_ends_before_the_interpreter(group, tmp_path):
    # The handler sleeps past the asker's timeout: it is still running at exit. The exit
    # waits for it (as concurrent.futures waits for its workers), then finalizes.
    handlers = """
        import time
        def slow(sender, question):
            # Real time: still running when the program exits (0.1 s in), done only
            # within the finalization hold; an event set at exit would end it first.
            time.sleep(0.5)
            print("answered", flush=True)
            return question
    """
    program = f"""
        import asyncio, hail, handlers
        a = hail.Device("a", interface="{LOOPBACK}", group="{group}")
        a.on_question(handlers.slow)  # no loop running: one of hail's handler threads
        b = hail.Device("b", interface="{LOOPBACK}", group="{group}")

        async def main():
            events = b.events()
            while "a" not in b.peers():
                await events.__anext__()
            print((await b.ask("a", b"q", timeout=0.1))["a"].kind, flush=True)

        asyncio.run(main())
        HOLD = 1.0
    """
    # The handler lives in a module of its own: a function of the program's would keep
    # the program's globals alive past their clearing, and `_finalizing` with them.
    r = run(program, tmp_path, handlers=handlers)
    assert r.stdout.split() == ["no_answer", "answered"]


def test_an_open_connect_at_exit_leaves_its_callback_thread_quiet(group, tmp_path):
    # Never closed: its device is dropped with the program's globals, which ends the
    # callback thread's job queue while the interpreter finalizes.
    program = f"""
        import functools, hail
        _c = hail.Connect(name="left-open", fr=functools.partial(print, "fr"),
                          interface="{LOOPBACK}", group="{group}")
        HOLD = 0.3
    """
    for _ in range(3):  # before the fix, about one run in two panicked
        run(program, tmp_path)
