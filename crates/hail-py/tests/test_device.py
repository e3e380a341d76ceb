"""hail.Device between two Python devices on loopback."""

import asyncio

import pytest

import hail
from conftest import BOUND, LOOPBACK, bounded, cancelling, joined, run_hooked


def pair(group, passphrase=None):
    a = hail.Device("alpha", passphrase=passphrase, interface=LOOPBACK, group=group)
    b = hail.Device("beta", passphrase=passphrase, interface=LOOPBACK, group=group)
    return a, b


async def close(*devices):
    for d in devices:
        await d.close()


def test_exceptions_form_one_hierarchy_with_kinds():
    assert issubclass(hail.NoAnswer, hail.Timeout)
    assert issubclass(hail.Timeout, hail.HailError)
    assert issubclass(hail.UnknownMethod, hail.RemoteError)
    assert issubclass(hail.HailError, Exception)
    assert hail.NoAnswer.kind == "no_answer"
    assert hail.Full.kind == "full"
    assert hail.NotConnected("x").kind == "not_connected"


def test_bad_settings_raise_config_errors(group):
    with pytest.raises(hail.ConfigError, match="addr:port"):
        hail.Device("x", interface=LOOPBACK, group="not-a-group")
    with pytest.raises(hail.ConfigError):
        hail.Device("", interface=LOOPBACK, group=group)
    with pytest.raises(hail.ConfigError, match="no-such-if"):
        hail.Device("x", interface="no-such-if", group=group)


def test_groups_are_the_groups_the_device_discovers_on(group):
    async def main():
        async with hail.Device("one", interface=LOOPBACK, group=group) as d:
            assert d.groups == [group] and d.group == group
            assert f"groups={[group]!r}".replace("'", '"') in repr(d)

    bounded(main())


def test_properties_keep_their_last_values_after_close_and_methods_raise_closed(group):
    # The package's one rule (Channel.group, Server.address, Client.address too): a
    # property answers after close with what it last was; a method raises Closed.
    async def main():
        d = hail.Device("gone", interface=LOOPBACK, group=group)
        before = (d.name, d.id, d.address, d.group, d.groups)
        await d.close()
        assert (d.name, d.id, d.address, d.group, d.groups) == before
        assert d.groups == [group]
        assert f"groups={[group]!r}".replace("'", '"') in repr(d)
        with pytest.raises(hail.Closed):
            d.peers()
        with pytest.raises(hail.Closed):
            d.send_nowait("x", b"x")

    bounded(main())


def test_groups_unset_on_an_interface_with_both_families_are_both_defaults(tmp_path):
    """In a network namespace of the test's own: a veth end with IPv4 and IPv6."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and `ip` for a network namespace of its own")
    ns = f"hail-py-groups-{os.getpid()}"

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=BOUND)

    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot make a network namespace: {e.stderr.strip()}")
    try:
        ip("-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for link in ("lo", "v0", "v1"):
            ip("-n", ns, "link", "set", link, "up")
        ip("-n", ns, "addr", "add", "10.77.0.1/24", "dev", "v0")
        ip("-n", ns, "addr", "add", "fd00:77::1/64", "dev", "v0", "nodad")
        program = (
            "import asyncio, json, hail\n"
            "async def main():\n"
            "    async with hail.Device('dual', interface='v0') as d:\n"
            "        print(json.dumps([d.groups, d.group]))\n"
            "asyncio.run(main())\n"
        )
        r = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", program],
            capture_output=True, text=True, timeout=BOUND,
        )
        assert r.returncode == 0, r.stderr
        groups, first = json.loads(r.stdout)
        assert groups == ["239.255.72.76:5676", "[ff02::4841:494c]:5676"]
        assert first == groups[0]
    finally:
        ip("netns", "del", ns)


def test_two_devices_join_send_and_ask(group):
    async def main():
        a, b = pair(group)
        assert a.address.startswith("127.0.0.1:")
        await joined(a, "beta")
        await joined(b, "alpha")
        assert set(a.peers()) == {"beta"}
        assert a.peers()["beta"].id == b.id

        b.on_question(lambda sender, q: sender.encode() + b":" + q.upper())
        answers = await a.ask("beta", b"state?")
        assert answers == {"beta": b"alpha:STATE?"}

        await a.send("beta", b"one")
        a.send_nowait("beta", b"two")
        events = b.events()
        got = []
        while len(got) < 2:
            e = await events.__anext__()
            if isinstance(e, hail.Message):
                assert e.sender == "alpha"
                # The id of the key alpha's link proved, as Peer.id and Device.id show it.
                assert e.sender_id == a.id == b.peers()["alpha"].id
                got.append(e.data)
        assert got == [b"one", b"two"]
        await close(a, b)

    bounded(main())


def test_ask_tells_no_answer_from_an_empty_answer(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        release = asyncio.Event()  # set once the slow question has gone unanswered

        async def answer(sender, q):
            if q == b"slow":
                await release.wait()
            if q == b"fail":
                raise ValueError("no such lamp")
            return b""

        b.on_question(answer)  # a coroutine function, run on this loop
        assert (await a.ask("beta", b"quick")) == {"beta": b""}

        slow = (await a.ask("beta", b"slow", timeout=0.3))["beta"]
        assert isinstance(slow, hail.NoAnswer) and slow.kind == "no_answer"
        release.set()

        failed = (await a.ask("beta", b"fail"))["beta"]
        assert isinstance(failed, hail.RemoteError)
        assert "ValueError: no such lamp" in str(failed)

        both = await a.ask(["beta", "gamma"], b"quick")
        assert both["beta"] == b""
        assert isinstance(both["gamma"], hail.UnknownName)
        await close(a, b)

    bounded(main())


def test_a_device_without_question_handler_fails_the_question(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        r = (await a.ask("beta", b"?"))["beta"]
        assert isinstance(r, hail.RemoteError)
        with pytest.raises(hail.HailError):
            b.on_question(lambda s, q: q)
            b.on_question(lambda s, q: q)  # once per device
        await close(a, b)

    bounded(main())


def test_send_raises_typed_errors(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        with pytest.raises(hail.UnknownName) as e:
            await a.send("gamma", b"x")
        assert e.value.kind == "unknown_name"
        with pytest.raises(hail.UnknownName):
            a.send_nowait("gamma", b"x")
        results = await a.send(["beta", "gamma"], b"x")
        assert results["beta"] is None
        assert isinstance(results["gamma"], hail.UnknownName)
        assert (await a.send(None, b"to all")) == {"beta": None}
        with pytest.raises(TypeError):
            await a.send(42, b"x")
        await close(a, b)

    bounded(main())


def test_send_nowait_raises_full_when_the_link_has_no_room(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        # beta never reads its events: its stream fills, it stops reading its link, the
        # socket buffers fill, then alpha's send queue: send_nowait must say Full, not wait.
        chunk = bytes(64 * 1024)
        with pytest.raises(hail.Full) as e:
            for _ in range(4096):  # 256 MiB at most; Full comes after a few MiB
                a.send_nowait("beta", chunk)
        assert e.value.kind == "full"
        await close(a, b)

    bounded(main(), timeout=30)


def test_bind_and_call_carry_json(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        b.bind("add", lambda args: {"sum": args[0] + args[1]})
        release = asyncio.Event()  # set once the slow call has timed out

        async def slow(arg):
            await release.wait()

        b.bind("slow", slow)
        assert await a.call("beta", "add", [20, 22]) == {"sum": 42}
        with pytest.raises(hail.UnknownMethod):
            await a.call("beta", "missing", None)
        with pytest.raises(hail.Timeout):
            await a.call("beta", "slow", 1, timeout=0.3)
        release.set()
        with pytest.raises(hail.RemoteError, match="TypeError"):
            await a.call("beta", "add", 5)  # 5[0]: TypeError
        with pytest.raises(hail.UnknownName):
            await a.call("gamma", "add", [1, 2])
        await close(a, b)

    bounded(main())


def test_sealed_devices_talk(group):
    async def main():
        a, b = pair(group, passphrase="correct horse battery staple")
        await joined(a, "beta")
        b.on_question(lambda s, q: b"sealed " + q)
        assert (await a.ask("beta", b"hello")) == {"beta": b"sealed hello"}
        await close(a, b)

    bounded(main(), timeout=30)


def test_close_says_goodbye_and_ends_the_events(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        events = a.events()
        await b.close()
        await b.close()  # twice is fine
        with pytest.raises(hail.Closed):
            await b.send("alpha", b"x")
        with pytest.raises(hail.Closed):
            b.peers()
        while True:
            e = await events.__anext__()
            if isinstance(e, hail.PeerLeft):
                assert e.peer.name == "beta" and e.reason == "goodbye"
                break
        await a.close()
        with pytest.raises(StopAsyncIteration):
            while True:
                await events.__anext__()

    bounded(main())


def test_async_with_closes(group):
    async def main():
        async with hail.Device("solo", interface=LOOPBACK, group=group) as d:
            assert d.name == "solo"
        with pytest.raises(hail.Closed):
            d.peers()

    bounded(main())


def test_identity_file_keeps_the_id_and_metadata_reaches_peers(group, tmp_path):
    key = tmp_path / "beta.key"

    async def main():
        a = hail.Device("alpha", interface=LOOPBACK, group=group)
        b = hail.Device(
            "beta", interface=LOOPBACK, group=group, identity_file=key, metadata={"room": "lab-2"}
        )
        first = b.id
        assert key.exists() and (key.stat().st_mode & 0o077) == 0
        await joined(a, "beta")
        seen = a.peers()["beta"]
        assert seen.id == first and seen.metadata == {"room": "lab-2"}
        await b.close()
        # A restart from the same file is the same device: the same id.
        b2 = hail.Device("beta", interface=LOOPBACK, group=group, identity_file=str(key))
        assert b2.id == first
        # Without a file, every start is a new key and id.
        c1 = hail.Device("gamma", interface=LOOPBACK, group=group)
        c2 = hail.Device("gamma2", interface=LOOPBACK, group=group)
        assert c1.id != c2.id
        await close(a, b2, c1, c2)

    bounded(main())


def test_bad_metadata_and_identity_files_raise_config_errors(group, tmp_path):
    with pytest.raises(hail.ConfigError):
        hail.Device("x", interface=LOOPBACK, group=group, metadata={"Bad Key!": "v"})
    broken = tmp_path / "broken.key"
    broken.write_bytes(b"not a key")
    broken.chmod(0o600)
    with pytest.raises(hail.ConfigError):
        hail.Device("x", interface=LOOPBACK, group=group, identity_file=broken)


def test_known_devices_pins_a_name_to_its_first_key(group, tmp_path):
    pins = tmp_path / "known"

    async def main():
        a = hail.Device("alpha", interface=LOOPBACK, group=group, known_devices=pins)
        b = hail.Device("beta", interface=LOOPBACK, group=group)
        await joined(a, "beta")
        await close(a, b)

    bounded(main())
    lines = [line.split("\t") for line in pins.read_text().splitlines() if line.strip()]
    assert [name for name, _key in lines] == ["beta"]


def test_events_batch_hands_over_what_is_waiting_in_order(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        await joined(b, "alpha")
        for i in range(50):
            a.send_nowait("beta", b"%d" % i)
        events = b.events()
        got = []
        while len(got) < 50:
            batch = await events.batch(max=16)
            assert 1 <= len(batch) <= 16
            got += [e.data for e in batch if isinstance(e, hail.Message)]
        assert got == [b"%d" % i for i in range(50)]
        await close(a, b)
        # What was still waiting comes first (alpha's goodbye), then the end: [].
        rest = []
        while batch := await events.batch():
            rest += batch
        assert all(not isinstance(e, hail.Message) for e in rest)

    bounded(main())


def test_async_for_hands_over_waiting_and_later_events_in_order(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        await joined(b, "alpha")
        events = b.events()
        while events.try_next() is not None:  # the joins: nothing else waits after them
            pass
        assert events.try_next() is None
        for i in range(300):  # waiting when the loop starts: handed over without awaits
            a.send_nowait("beta", b"%d" % i)
        got = []
        async for e in events:
            if isinstance(e, hail.Message):
                got.append(e.data)
                assert e.sender == "alpha" and e.sender_id == a.id
                if len(got) == 300:
                    break
        # Then one at a time, each sent once the one before arrived: each is awaited
        # (nothing waits when the loop asks), through the runtime.
        later = []
        await a.send("beta", b"late 0")
        async for e in events:
            if isinstance(e, hail.Message):
                later.append(e.data)
                if len(later) == 3:
                    break
                await a.send("beta", b"late %d" % len(later))
        assert got == [b"%d" % i for i in range(300)]
        assert later == [b"late 0", b"late 1", b"late 2"]
        await close(a, b)
        # The stream ends: `async for` stops.
        async for e in events:
            assert not isinstance(e, hail.Message)

    bounded(main())


def test_a_cancelled_wait_leaves_the_stream_whole(group):
    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        await joined(b, "alpha")
        events = b.events()
        while events.try_next() is not None:
            pass
        # Nothing waits: each wait goes to hail's runtime and is cancelled at once. Its task
        # is aborted only when the loop next runs callbacks, after `send` below has started:
        # it may take "after" first, and must hand it back.
        waits = []
        for wait in (events.__anext__, events.batch):
            waits.append(asyncio.ensure_future(wait()))
            await asyncio.sleep(0)  # started: its wait is on hail's runtime
            assert waits[-1].cancel()
        await a.send("beta", b"after")
        for wait in waits:
            with pytest.raises(asyncio.CancelledError):
                await wait
        e = await events.__anext__()
        while not isinstance(e, hail.Message):
            e = await events.__anext__()
        assert e.data == b"after"
        await close(a, b)

    bounded(main())


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("path", ["waker", "call_soon_threadsafe"])
def test_a_wait_cancelled_after_its_event_arrived_hands_it_back(group, path, when):
    # The wait's result reaches the loop and the task awaiting it is cancelled right before
    # the loop sets it, or right after, before the task resumed (`cancelling`): as a
    # timeout firing in the same turn of the loop does. The event must come next, not go
    # with the task's CancelledError.
    victim = {}

    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        await joined(b, "alpha")
        events = b.events()

        async def iterating():
            async for e in events:
                return e

        async def awaiting(wait):
            return await wait()

        for wait in (events.__anext__, events.batch, iterating):
            while True:
                while events.try_next() is not None:
                    pass
                task = asyncio.ensure_future(awaiting(wait))
                await asyncio.sleep(0)  # the task waits on hail's runtime
                if not task.done():  # (else a late event of the meeting came first)
                    break
            victim["task"] = task
            # Not awaited on this loop: the hook sees the wait's result alone.
            a.send_nowait("beta", b"after")
            with pytest.raises(asyncio.CancelledError):
                await task
            assert "task" not in victim, "the hook ran"
            got = victim.pop("got", None)  # ("before": the wait's future had no result)
            first = got[0] if isinstance(got, list) else got
            # Something after it, so that a lost event shows as the wrong one, not a hang.
            a.send_nowait("beta", b"later")
            nxt = await events.__anext__()
            if first is not None:
                assert nxt is first, (wait, nxt, first)
            else:
                while not isinstance(nxt, hail.Message):  # (a late event of the meeting)
                    nxt = await events.__anext__()
                assert nxt.data == b"after", wait
            while not (isinstance(nxt, hail.Message) and nxt.data == b"later"):
                nxt = await events.__anext__()
        await close(a, b)

    run_hooked(path, cancelling(victim, when), main)


def test_a_plain_handler_that_blocks_holds_up_no_other_question(group):
    import threading

    release = threading.Event()

    def answer(sender, q):
        if q == b"slow":
            release.wait(5)  # blocks its thread, not the device
        return q

    a, b = pair(group)
    # Registered with no event loop running: it runs on hail's handler threads.
    b.on_question(answer)

    async def main():
        await joined(a, "beta")
        slow = asyncio.ensure_future(a.ask("beta", b"slow", timeout=5.0))
        for i in range(5):  # each answered while the slow one still blocks
            assert await a.ask("beta", b"q%d" % i, timeout=2.0) == {"beta": b"q%d" % i}
        assert not slow.done()
        release.set()
        assert await slow == {"beta": b"slow"}
        await close(a, b)

    bounded(main())


def test_awaitables_complete_on_each_of_several_event_loops(group):
    import threading

    a, b = pair(group)
    b.on_question(lambda sender, q: q)
    bounded(joined(a, "beta"))
    results = {}

    def asker(n):
        async def main():
            return [await a.ask("beta", b"%d-%d" % (n, i)) for i in range(20)]

        results[n] = bounded(main())

    # Loops of their own, one after another on this thread and at once on two others.
    asker(0)
    threads = [threading.Thread(target=asker, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    asker(3)
    for n in range(4):
        assert results[n] == [{"beta": b"%d-%d" % (n, i)} for i in range(20)]
    bounded(close(a, b))


def test_handlers_on_the_loop_see_the_registrations_context_and_fail_typed(group):
    import contextvars

    who = contextvars.ContextVar("who", default="unset")

    async def main():
        a, b = pair(group)
        await joined(a, "beta")
        await joined(b, "alpha")
        who.set("registered")

        def answer(sender, q):  # plain, registered with the loop running: runs on it
            if q == b"boom":
                raise ValueError("no such lamp")
            return who.get().encode()

        async def method(arg):  # a coroutine function: run as a task made in that context
            return {"who": who.get(), "arg": arg}

        b.on_question(answer)
        b.bind("who", method)
        who.set("changed after")
        assert await a.ask("beta", b"q") == {"beta": b"registered"}
        failed = (await a.ask("beta", b"boom"))["beta"]
        assert isinstance(failed, hail.RemoteError) and "ValueError: no such lamp" in str(failed)
        assert await a.call("beta", "who", 7) == {"who": "registered", "arg": 7}
        await close(a, b)

    bounded(main())


def test_a_handler_whose_loop_is_closed_fails_questions_instead_of_piling_them_up(group):
    a, b = pair(group)

    async def register():
        b.on_question(lambda sender, q: b"never")  # on this loop, closed when it ends
        await joined(b, "alpha")

    bounded(register())

    async def main():
        await joined(a, "beta")
        # The first waits in the closed loop's queue: no answer in time.
        first = (await a.ask("beta", b"1", timeout=1.5))["beta"]
        assert isinstance(first, hail.NoAnswer)
        # Its queue a second behind, the next finds the loop closed and fails: an error,
        # not the no answer its 5 s timeout would give.
        second = (await a.ask("beta", b"2", timeout=5.0))["beta"]
        assert isinstance(second, hail.RemoteError) and "closed" in str(second)
        await close(a, b)

    bounded(main())


class _NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch a socket (`add_reader` raises, as Windows' proactor loop)."""

    def add_reader(self, *args):
        raise NotImplementedError


def test_handlers_on_a_loop_that_cannot_watch_a_socket_run_there_and_fail_once_it_closes(group):
    import gc
    import threading
    import warnings

    a, b = pair(group)
    loop = _NoReaderLoop()

    async def registered_here():
        def answer(sender, q):  # plain: called on this loop's thread
            return threading.current_thread().name.encode()

        async def method(arg):  # a coroutine function: a task on this loop
            return {"arg": arg}

        b.on_question(answer)
        b.bind("m", method)
        await joined(a, "beta")
        assert await a.ask("beta", b"q") == {"beta": threading.current_thread().name.encode()}
        assert await a.call("beta", "m", 7) == {"arg": 7}

    loop.run_until_complete(asyncio.wait_for(registered_here(), 10))
    loop.close()

    async def after_it_closed():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            failed = (await a.ask("beta", b"q"))["beta"]
            gc.collect()
        assert isinstance(failed, hail.RemoteError) and "closed" in str(failed)
        # Nothing was made for the closed loop to run (a coroutine left unawaited).
        assert [str(w.message) for w in seen if "never awaited" in str(w.message)] == []
        await close(a, b)

    bounded(after_it_closed())
