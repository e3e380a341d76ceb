"""hail.Connect, pythonConnect's synchronous front, on loopback."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import hail
from conftest import BOUND, LOOPBACK


class Recorder:
    """pythonConnect-style callbacks that record what they were given, and on which thread;
    `wait_for` waits (bounded) until what they recorded makes a predicate true."""

    def __init__(self, answer=None):
        self.messages = []
        self.remotes = []
        self.errors = []
        self.threads = set()
        self.answer = answer
        self.changed = threading.Condition()

    def _record(self, what, item):
        with self.changed:
            what.append(item)
            self.changed.notify_all()

    def fr(self, message, source):
        self.threads.add(threading.get_ident())
        self._record(self.messages, (message, source))

    def fhu(self, remote_list):
        self._record(self.remotes, dict(remote_list))

    def fe(self, error):
        self._record(self.errors, error)

    def fa(self, question, source):
        self.threads.add(threading.get_ident())
        return self.answer(question, source) if self.answer else ""

    def wait_for(self, predicate, timeout: float = BOUND):
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"not true within {timeout} s: {predicate}")

    def sees(self, name):
        """Waits until `fhu` has reported `name` among the remote devices."""
        self.wait_for(lambda: any(name in r for r in self.remotes))


def connect(name, rec, group, **kw):
    return hail.Connect(
        fr=rec.fr, fhu=rec.fhu, fe=rec.fe, fa=rec.fa, name=name,
        interface=LOOPBACK, group=group, **kw,
    )


def test_two_connects_message_and_ask(group):
    ra = Recorder()
    rb = Recorder(answer=lambda q, source: f"{source} asked {q}")
    a = connect("lamp", ra, group)
    b = connect("switch", rb, group)
    try:
        ra.sees("switch")
        rb.sees("lamp")
        assert "switch" in a.peers() and "lamp" in b.peers()
        ip, port = a.remoteDevices["switch"]
        assert ip == "127.0.0.1" and port > 0

        a.sendMessage("hello", "switch")
        a.sendMessage("to all", hail.DEST_ALL)
        rb.wait_for(lambda: len(rb.messages) == 2)
        assert rb.messages == [("hello", "lamp"), ("to all", "lamp")]
        # Callbacks run on one thread of their own, not on the caller's.
        assert len(rb.threads) == 1 and threading.get_ident() not in rb.threads

        assert a.askDevice("state?", "switch") == {"switch": "lamp asked state?"}
        assert a.ask_device("state?", ["switch"]) == {"switch": "lamp asked state?"}
        assert a.send_message("x", ["switch"]) == {"switch": None}
    finally:
        a.close()
        b.close()
    a.close()  # twice is fine


def test_ask_device_tells_no_answer_from_an_empty_answer(group):
    release = threading.Event()

    def answer(q, source):
        if q == "slow":
            release.wait(BOUND)
        return ""

    ra, rb = Recorder(), Recorder(answer=answer)
    a = connect("asker", ra, group)
    b = connect("answerer", rb, group)
    try:
        ra.sees("answerer")
        assert a.askDevice("quick", "answerer") == {"answerer": ""}
        assert a.ask_device("quick", "answerer") == {"answerer": ""}
        # pythonConnect's shape: "" for no answer in time; ask_device says which it was.
        assert a.askDevice("slow", "answerer", timeout=0.2) == {"answerer": ""}
        r = a.ask_device("slow", "answerer", timeout=0.2)["answerer"]
        assert isinstance(r, hail.NoAnswer)
        release.set()  # the callback thread answers the slow ones, then the next
        assert a.askDevice("quick", ["answerer", "nobody"]) == {"answerer": "", "nobody": ""}
        assert isinstance(a.ask_device("q", "nobody")["nobody"], hail.UnknownName)
    finally:
        release.set()
        a.close()
        b.close()


def test_errors_in_callbacks_and_unreachable_targets_go_to_fe(group):
    def fa(q, source):
        raise RuntimeError("the answer callback broke")

    ra, rb = Recorder(), Recorder(answer=fa)
    rb.fr = lambda message, source: 1 / 0
    a = connect("one", ra, group)
    b = hail.Connect(name="two", fr=rb.fr, fe=rb.fe, fa=rb.fa, interface=LOOPBACK, group=group)
    try:
        ra.sees("two")
        a.sendMessage("boom", "two")
        rb.wait_for(lambda: any(isinstance(e, ZeroDivisionError) for e in rb.errors))
        r = a.ask_device("q", "two")["two"]
        assert isinstance(r, hail.RemoteError) and "the answer callback broke" in str(r)
        rb.wait_for(lambda: any(isinstance(e, RuntimeError) for e in rb.errors))
        a.sendMessage("lost", "nobody")  # pythonConnect never raised here: fe hears of it
        ra.wait_for(lambda: any(isinstance(e, hail.UnknownName) for e in ra.errors))
    finally:
        a.close()
        b.close()


def test_keywords_of_pythonconnect_make_the_group(group):
    ip, port = group.rsplit(":", 1)
    c = hail.Connect(name="kw", multicast_ip=ip, port=int(port), interface=LOOPBACK)
    try:
        assert c.name == "kw"
    finally:
        c.leavingNetwork()


def thread_stacks(pid: int) -> str:
    """Every thread's stack of process `pid` by gdb, if gdb is there and may attach (at most
    20,000 characters); else why not."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return "(no gdb for the threads' stacks)"
    try:
        dump = subprocess.run(
            [gdb, "-batch", "-p", str(pid), "-ex", "thread apply all bt"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return f"(gdb failed: {e})"
    return (dump.stdout + dump.stderr)[-20_000:]


def test_ctrl_c_interrupts_a_blocking_ask(group):
    """SIGINT during askDevice raises KeyboardInterrupt at once, not at the timeout."""
    script = textwrap.dedent(
        f"""
        import threading
        import hail
        release = threading.Event()
        b_here = threading.Event()
        def fa(q, source):
            print("asking", flush=True)  # the question arrived: askDevice is waiting
            release.wait(30)
            return ""
        def fhu(remotes):
            if "b" in remotes:
                b_here.set()
        a = hail.Connect(name="a", fhu=fhu, interface="127.0.0.1", group="{group}")
        b = hail.Connect(name="b", fa=fa, interface="127.0.0.1", group="{group}")
        assert b_here.wait(10)
        try:
            a.askDevice("?", "b", timeout=30)
            print("no interrupt")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        release.set()
        a.close()
        b.close()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = proc.stdout.readline().strip()
        assert first == "asking", (first, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            # Keep what it printed, and where its threads are: this test has failed this way
            # a few times under load (a 10 s stall with nothing printed after "asking") and
            # the cause is not known yet.
            stacks = thread_stacks(proc.pid)
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(
                f"no exit within {BOUND} s of SIGINT: {out!r} {err!r}\n{stacks}"
            )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Within BOUND (10 s) of the signal, so not at the ask's 30 s timeout.
    assert out.strip() == "interrupted", (out, err)


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_the_gil_is_released_while_a_connect_waits(group):
    """Another Python thread keeps running while askDevice waits."""
    release = threading.Event()
    ra, rb = Recorder(), Recorder(answer=lambda q, s: release.wait(BOUND) and "done")
    a = connect("waiter", ra, group)
    b = connect("slowpoke", rb, group)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            if len(ticks) == 50:
                release.set()  # the answer comes only once this thread has run a while
            stop.wait(0.001)

    try:
        ra.sees("slowpoke")
        t = threading.Thread(target=ticker)
        t.start()
        assert a.askDevice("?", "slowpoke", timeout=BOUND) == {"slowpoke": "done"}
        assert len(ticks) >= 50
    finally:
        stop.set()
        release.set()
        a.close()
        b.close()
