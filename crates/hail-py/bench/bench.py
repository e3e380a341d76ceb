"""hail from Python against eclipse-zenoh's Python package and a plain asyncio TCP socket.

Run by hand, in an environment of its own (see README.md beside this file); not part of CI.
Every case has a receiving process of its own (this script with `--role`), started by the
main process, which sends; everything is on loopback:

- hail: devices with `interface="127.0.0.1"`, a group of this run's own (TTL 1), links on
  127.0.0.1.
- zenoh: peer mode, multicast scouting off, the receiver listening on
  tcp/127.0.0.1:PORT and the sender connecting to it (no scouting, no gossip over any
  interface).
- asyncio: a TCP server on 127.0.0.1, each message a 4-byte length (big-endian) and the
  body.

What it measures, side by side in one run:

- `send-64B` / `send-1KiB`: one-way messages. The sender calls hail's `send_nowait`
  (retrying after `Full`), zenoh's `Publisher.put` (congestion control `BLOCK`, so none is
  dropped), or asyncio's `writer.write` (`drain` every 64 writes) as fast as it can for
  COUNT messages. `sent/s` is COUNT over the sending time; `delivered/s` is what the
  receiver counted, over the time from the first send to the last arrival (one clock:
  `time.monotonic` is the same across processes on Linux). `lost` counts messages that
  did not arrive. `cpu us/msg` is the CPU time (every thread of the process) per message
  of the sender, from its first send until the receiver has counted, and of the receiver
  while it counted: unlike the rates it does not depend on what else the machine runs.
  hail's receiver reads `async for event in dev.events()` ("hail send_nowait") or `await
  events.batch(1024)` ("hail (rx batch)"); zenoh's is a subscriber callback that counts
  the sample without reading its payload ("zenoh put"), or also takes the payload as
  `bytes` (`sample.payload.to_bytes()`, "zenoh (to_bytes)"), as a hail `Message` carries
  it; asyncio's `readexactly` twice per message.
- `ask-p50` / `ask-p99`: one question, one answer, one peer, one at a time: hail's `await
  ask(peer, q)` (the answerer's plain handler registered with no event loop running, so
  on hail's handler threads, "hail ask"; or registered inside `asyncio.run`, so on that
  loop, "hail ask (on loop)"), zenoh's `Session.get` to one queryable (time to its reply), asyncio's
  write-then-readexactly on one connection. In microseconds.

With `--baseline DIR` (a folder holding another build of the package, say main's:
`pip install --target DIR ./crates/hail-py` from its checkout), each round also runs
`hail send_nowait` with that build ("hail (baseline)"), its sender a process of its own.

Usage: `python bench.py [--quick] [--rounds N] [--baseline DIR] [--json FILE]`.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import struct
import subprocess
import sys
import time

SIZES = {"64B": 64, "1KiB": 1024}
HAIL_GROUP = "239.255.74.{}:{}"
LOOPBACK = "127.0.0.1"


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def close(dev):
    """Closes a hail device from synchronous code (its awaitables need a running loop)."""

    async def main():
        await dev.close()

    asyncio.run(main())


def say(obj):
    print(json.dumps(obj), flush=True)


# --- receivers (each in a process of its own) -------------------------------------------


def rx_hail(args):
    import hail

    dev = hail.Device("rx", interface=LOOPBACK, group=args.group)
    if not args.on_loop:
        dev.on_question(lambda sender, q: b"ok")  # no loop running: on hail's threads

    async def main():
        state = {"got": 0, "last": 0.0}
        Message = hail.Message

        async def count():
            # As a user would read them: `async for`, one event at a time.
            async for e in dev.events():
                if type(e) is Message:
                    state["got"] += 1
                    state["last"] = time.monotonic()
                    if state["got"] >= args.count:
                        return

        async def count_batches():
            # `Events.batch()`: one await for every event waiting.
            events = dev.events()
            while batch := await events.batch(1024):
                for e in batch:
                    if type(e) is Message:
                        state["got"] += 1
                state["last"] = time.monotonic()
                if state["got"] >= args.count:
                    return

        say({"ready": True})
        c0 = time.process_time()
        try:
            reader = count_batches() if args.batch else count()
            await asyncio.wait_for(reader, args.count / 1000 + 10)  # at >= 1,000 msg/s
        except asyncio.TimeoutError:
            pass
        state["cpu"] = time.process_time() - c0
        say(state)
        await asyncio.sleep(0.5)  # let the sender see its last sends handed over
        await dev.close()

    async def answer_on_loop():
        # Registered with the loop running, as in the package README: runs on the loop.
        dev.on_question(lambda sender, q: b"ok")
        say({"ready": True})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await dev.close()

    if args.count:
        asyncio.run(main())
    elif args.on_loop:
        asyncio.run(answer_on_loop())
    else:
        say({"ready": True})
        sys.stdin.read()  # questions only: until the sender closes our stdin
        close(dev)


def zenoh_config(listen=None, connect=None):
    import zenoh

    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("scouting/gossip/enabled", "false")
    c.insert_json5("listen/endpoints", json.dumps([f"tcp/{listen}"] if listen else []))
    c.insert_json5("connect/endpoints", json.dumps([f"tcp/{connect}"] if connect else []))
    return c


def rx_zenoh(args):
    import threading

    import zenoh

    session = zenoh.open(zenoh_config(listen=args.addr))
    got = [0, 0.0]
    done = threading.Event()

    def on_sample(sample):
        if args.bytes:
            sample.payload.to_bytes()  # the message as `bytes`, as hail's Message.data is
        got[0] += 1
        got[1] = time.monotonic()
        if got[0] >= args.count:
            done.set()

    sub = session.declare_subscriber("bench/msg", on_sample)
    qbl = session.declare_queryable("bench/ask", lambda q: q.reply(q.key_expr, b"ok"))
    say({"ready": True})
    c0 = time.process_time()
    if args.count:
        seen = 0
        while not done.wait(args.idle):
            if got[0] and got[0] == seen:
                break  # nothing new for `idle` seconds
            seen = got[0]
        say({"got": got[0], "last": got[1], "cpu": time.process_time() - c0})
    else:
        sys.stdin.read()
    sub.undeclare()
    qbl.undeclare()
    session.close()


def rx_asyncio(args):
    host, port = args.addr.rsplit(":", 1)

    async def main():
        done = asyncio.Event()
        state = {"got": 0, "last": 0.0}

        async def handle(reader, writer):
            try:
                while True:
                    (n,) = struct.unpack(">I", await reader.readexactly(4))
                    body = await reader.readexactly(n)
                    if body == b"?":
                        writer.write(struct.pack(">I", 2) + b"ok")
                        await writer.drain()
                        continue
                    state["got"] += 1
                    state["last"] = time.monotonic()
                    if state["got"] >= args.count:
                        done.set()
            except asyncio.IncompleteReadError:
                done.set()

        server = await asyncio.start_server(handle, host, int(port))
        say({"ready": True})
        c0 = time.process_time()
        if args.count:
            try:
                await asyncio.wait_for(done.wait(), args.count / 1000 + 10)
            except asyncio.TimeoutError:
                pass
            say({"got": state["got"], "last": state["last"], "cpu": time.process_time() - c0})
        else:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


# --- the sending side -------------------------------------------------------------------


class Receiver:
    def __init__(self, role, count, idle, **kw):
        cmd = [sys.executable, __file__, "--role", role, "--count", str(count), "--idle", str(idle)]
        for k, v in kw.items():
            cmd += [f"--{k}", str(v)]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.line()  # ready

    def line(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"receiver ended: {self.p.wait()}")
        return json.loads(line)

    def stop(self):
        self.p.stdin.close()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def rate_row(name, size, count, t0, t_sent, result, full=0, tx_cpu=0.0):
    got, last = result["got"], result["last"]
    return {
        "case": f"send-{size}",
        "system": name,
        "sent_per_s": count / (t_sent - t0),
        "delivered_per_s": got / (last - t0) if got and last > t0 else 0.0,
        "lost": count - got,
        "full_retries": full,
        # CPU time (every thread) per message: the sender's from its first send until the
        # receiver has counted, the receiver's while it counted. Load-independent, unlike
        # the rates on a shared machine.
        "tx_cpu_us": tx_cpu / count * 1e6,
        "rx_cpu_us": result.get("cpu", 0.0) / count * 1e6,
    }


def send_hail(size, count, idle, batch=0):
    import hail

    group = HAIL_GROUP.format(random.randint(1, 250), free_port(socket.SOCK_DGRAM))
    rx = Receiver("hail", count, idle, group=group, batch=batch)
    dev = hail.Device("tx", interface=LOOPBACK, group=group)
    deadline = time.monotonic() + 10
    while "rx" not in dev.peers():
        if time.monotonic() > deadline:
            raise RuntimeError("hail: rx did not join")
        time.sleep(0.005)
    payload = os.urandom(SIZES[size])
    send, Full = dev.send_nowait, hail.Full
    full = 0
    c0 = time.process_time()
    t0 = time.monotonic()
    for _ in range(count):
        while True:
            try:
                send("rx", payload)
                break
            except Full:
                full += 1
                time.sleep(0)
    t_sent = time.monotonic()
    name = "hail (rx batch)" if batch else "hail send_nowait"
    result = rx.line()
    row = rate_row(name, size, count, t0, t_sent, result, full, time.process_time() - c0)
    rx.stop()
    close(dev)
    return row


def send_hail_batch(size, count, idle):
    return send_hail(size, count, idle, batch=1)


def send_hail_baseline(size, count, idle):
    """`send_hail` with another build of the package (`--baseline DIR`, first on the path
    of a sending process of its own and of its receiver): old and new in one run."""
    cmd = [sys.executable, __file__, "--role", "tx-hail", "--size", size, "--count", str(count),
           "--idle", str(idle)]
    env = dict(os.environ, PYTHONPATH=BASELINE[0])
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    row = json.loads(out.splitlines()[-1])
    row["system"] = "hail (baseline)"
    return row


BASELINE = [None]


def send_zenoh(size, count, idle, to_bytes=0):
    import zenoh

    addr = f"{LOOPBACK}:{free_port()}"
    rx = Receiver("zenoh", count, idle, addr=addr, bytes=to_bytes)
    session = zenoh.open(zenoh_config(connect=addr))
    pub = session.declare_publisher("bench/msg", congestion_control=zenoh.CongestionControl.BLOCK)
    deadline = time.monotonic() + 10
    while not pub.matching_status.matching:
        if time.monotonic() > deadline:
            raise RuntimeError("zenoh: no subscriber matched")
        time.sleep(0.005)
    payload = os.urandom(SIZES[size])
    put = pub.put
    c0 = time.process_time()
    t0 = time.monotonic()
    for _ in range(count):
        put(payload)
    t_sent = time.monotonic()
    result = rx.line()
    name = "zenoh (to_bytes)" if to_bytes else "zenoh put"
    row = rate_row(name, size, count, t0, t_sent, result, 0, time.process_time() - c0)
    rx.stop()
    pub.undeclare()
    session.close()
    return row


def send_zenoh_bytes(size, count, idle):
    return send_zenoh(size, count, idle, to_bytes=1)


def send_asyncio(size, count, idle):
    addr = f"{LOOPBACK}:{free_port()}"
    rx = Receiver("asyncio", count, idle, addr=addr)
    host, port = addr.rsplit(":", 1)

    async def main():
        _, writer = await asyncio.open_connection(host, int(port))
        frame = struct.pack(">I", SIZES[size]) + os.urandom(SIZES[size])
        write = writer.write
        c0 = time.process_time()
        t0 = time.monotonic()
        for i in range(count):
            write(frame)
            if i % 64 == 63:
                await writer.drain()
        await writer.drain()
        t_sent = time.monotonic()
        writer.close()  # what the transport still buffers goes out first
        await writer.wait_closed()
        return t0, t_sent, time.process_time() - c0

    t0, t_sent, tx_cpu = asyncio.run(main())
    row = rate_row("asyncio TCP", size, count, t0, t_sent, rx.line(), 0, tx_cpu)
    rx.stop()
    return row


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def latency_row(name, samples):
    us = [x * 1e6 for x in samples]
    return {
        "case": "ask-1",
        "system": name,
        "p50_us": statistics.median(us),
        "p99_us": pct(us, 0.99),
        "n": len(us),
    }


def ask_hail(n, warmup, on_loop=0):
    import hail

    group = HAIL_GROUP.format(random.randint(1, 250), free_port(socket.SOCK_DGRAM))
    rx = Receiver("hail", 0, 1, group=group, on_loop=on_loop)

    async def main():
        dev = hail.Device("tx", interface=LOOPBACK, group=group)
        while "rx" not in dev.peers():
            await asyncio.sleep(0.005)
        samples = []
        for i in range(warmup + n):
            t = time.perf_counter()
            answers = await dev.ask("rx", b"q", timeout=2.0)
            dt = time.perf_counter() - t
            assert answers == {"rx": b"ok"}, answers
            if i >= warmup:
                samples.append(dt)
        await dev.close()
        return samples

    samples = asyncio.run(main())
    rx.stop()
    return latency_row("hail ask (on loop)" if on_loop else "hail ask", samples)


def ask_hail_on_loop(n, warmup):
    return ask_hail(n, warmup, on_loop=1)


def ask_zenoh(n, warmup):
    import zenoh

    addr = f"{LOOPBACK}:{free_port()}"
    rx = Receiver("zenoh", 0, 1, addr=addr)
    session = zenoh.open(zenoh_config(connect=addr))
    time.sleep(0.5)  # let the queryable's declaration reach us
    samples = []
    for i in range(warmup + n):
        t = time.perf_counter()
        replies = session.get("bench/ask")
        first = next(iter(replies))
        dt = time.perf_counter() - t
        assert first.ok is not None and first.ok.payload.to_bytes() == b"ok"
        for _ in replies:  # the end of the reply stream, outside the timing
            pass
        if i >= warmup:
            samples.append(dt)
    session.close()
    rx.stop()
    return latency_row("zenoh get", samples)


def ask_asyncio(n, warmup):
    addr = f"{LOOPBACK}:{free_port()}"
    rx = Receiver("asyncio", 0, 1, addr=addr)
    host, port = addr.rsplit(":", 1)

    async def main():
        reader, writer = await asyncio.open_connection(host, int(port))
        q = struct.pack(">I", 1) + b"?"
        samples = []
        for i in range(warmup + n):
            t = time.perf_counter()
            writer.write(q)
            await writer.drain()
            (m,) = struct.unpack(">I", await reader.readexactly(4))
            await reader.readexactly(m)
            dt = time.perf_counter() - t
            if i >= warmup:
                samples.append(dt)
        writer.close()
        return samples

    samples = asyncio.run(main())
    rx.stop()
    return latency_row("asyncio TCP", samples)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load": os.getloadavg(),
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["hail", "zenoh", "asyncio", "tx-hail"])
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--group")
    ap.add_argument("--addr")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--bytes", type=int, default=0)
    ap.add_argument("--on_loop", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--baseline", help="a folder holding another build of `hail` to run "
                    "send_nowait with too (`pip install --target DIR ./crates/hail-py`)")
    ap.add_argument("--size", choices=list(SIZES))
    args = ap.parse_args()
    if args.role == "tx-hail":  # `send_hail_baseline`'s sending process
        say(send_hail(args.size, args.count, args.idle))
        return
    if args.role:
        {"hail": rx_hail, "zenoh": rx_zenoh, "asyncio": rx_asyncio}[args.role](args)
        return

    import hail
    import zenoh  # noqa: F401  (fail early when the bench environment lacks it)

    rounds = args.rounds or (1 if args.quick else 3)
    counts = {"64B": 50_000 if args.quick else 200_000, "1KiB": 30_000 if args.quick else 100_000}
    n_ask = 500 if args.quick else 2000
    info = machine()
    info["hail"] = hail.__version__
    print(f"# {info}", file=sys.stderr)
    senders = [send_hail, send_hail_batch, send_zenoh, send_zenoh_bytes, send_asyncio]
    if args.baseline:
        BASELINE[0] = os.path.abspath(args.baseline)
        senders.insert(1, send_hail_baseline)
        info["baseline"] = BASELINE[0]
    rows = []
    for size in SIZES:
        for r in range(rounds):
            for fn in senders:
                row = fn(size, counts[size], args.idle)
                row["round"] = r
                rows.append(row)
                print(f"  {row}", file=sys.stderr)
    for r in range(rounds):
        for fn in (ask_hail, ask_hail_on_loop, ask_zenoh, ask_asyncio):
            row = fn(n_ask, 100)
            row["round"] = r
            rows.append(row)
            print(f"  {row}", file=sys.stderr)
    info["load_after"] = os.getloadavg()

    # Medians over the rounds, one table.
    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"load {info['load'][0]:.1f} -> {info['load_after'][0]:.1f}, {info['utc']} UTC")
    print(f"{'case':<12} {'system':<18} {'sent/s':>10} {'delivered/s':>12} {'lost':>6}  "
          f"{'p50 us':>8} {'p99 us':>8}  {'cpu us/msg tx+rx':>16}")
    for case in ["send-64B", "send-1KiB", "ask-1"]:
        for system in sorted({r["system"] for r in rows if r["case"] == case},
                             key=lambda s: ["hail", "zenoh", "asyncio"].index(s.split()[0])):
            sel = [r for r in rows if r["case"] == case and r["system"] == system]
            if case.startswith("send"):
                tx = statistics.median(r["tx_cpu_us"] for r in sel)
                rx = statistics.median(r["rx_cpu_us"] for r in sel)
                print(f"{case:<12} {system:<18} "
                      f"{statistics.median(r['sent_per_s'] for r in sel):>10,.0f} "
                      f"{statistics.median(r['delivered_per_s'] for r in sel):>12,.0f} "
                      f"{sum(r['lost'] for r in sel):>6}  {'':>8} {'':>8}  "
                      f"{tx:>7.2f} + {rx:<6.2f}")
            else:
                print(f"{case:<12} {system:<18} {'':>10} {'':>12} {'':>6}  "
                      f"{statistics.median(r['p50_us'] for r in sel):>8.1f} "
                      f"{statistics.median(r['p99_us'] for r in sel):>8.1f}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
