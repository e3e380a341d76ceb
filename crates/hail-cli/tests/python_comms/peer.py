#!/usr/bin/env python3
"""A Python Comms (ReliableCommunication) protocol peer, for hail's interop tests.

Written from the protocol description, with the standard library only: each message is a
4-byte little-endian unsigned length (struct "<I") followed by that many payload bytes. The
payload depends on the mode, as in Python Comms:

    json    json.dumps(obj).encode()        (hail: Json<serde_json::Value>)
    string  text.encode("utf-8")            (hail: Text)
    binary  the bytes as they are           (hail: Binary)

Unlike Python Comms itself, reads are looped (a header or body split across TCP segments is
reassembled) and frames over 16 MiB close the connection, so the tests exercise hail, not
the original's known bugs.

Usage (loopback only: any other host is refused):

    peer.py server [--port P] [--format json|string|binary]
    peer.py client --port P [--format json|string|binary]

Standard output gets one JSON object per line, flushed at once:

    {"event": "listening", "port": P}                  server, once bound
    {"event": "connected", "client": N}                server: a client came (N from 1)
    {"event": "connected"}                             client: connected to the server
    {"event": "message", "client": N, "message": M}    (client: without "client")
    {"event": "closed", "client": N}                   (client: without "client", then exit)

M is the decoded object (json), the text (string) or the bytes in hex (binary). Each line of
standard input is one message to send (the server sends it to every client): the object as
JSON (json mode), the text as a JSON string literal, so that any character can be given
(string mode), or the bytes in hex (binary mode). At the end of standard input the peer
closes its connections and exits.
"""

import argparse
import ipaddress
import json
import socket
import struct
import sys
import threading

MAX_FRAME = 16 * 1024 * 1024

_out_lock = threading.Lock()


def emit(**event):
    with _out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def encode(mode, line):
    if mode == "json":
        return json.dumps(json.loads(line)).encode()
    if mode == "string":
        text = json.loads(line)
        if not isinstance(text, str):
            raise ValueError("string mode takes a JSON string literal per line")
        return text.encode("utf-8")
    return bytes.fromhex(line)


def decode(mode, body):
    if mode == "json":
        return json.loads(body.decode("utf-8"))
    if mode == "string":
        return body.decode("utf-8")
    return body.hex()


def frame(payload):
    return struct.pack("<I", len(payload)) + payload


def encoded(mode, line):
    """The frame for one line of standard input, or None (said) if the line is invalid."""
    try:
        return frame(encode(mode, line.rstrip("\n")))
    except ValueError as e:
        emit(event="error", error=f"line not sent: {e}")
        return None


def recv_exact(sock, n):
    """n bytes, or None at the end of the stream."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frames(sock, mode, on_message):
    """Calls on_message(decoded) for every frame until the stream ends or breaks."""
    while True:
        try:
            header = recv_exact(sock, 4)
            if header is None:
                return
            (length,) = struct.unpack("<I", header)
            if length > MAX_FRAME:
                return
            body = recv_exact(sock, length)
            if body is None:
                return
        except OSError:
            return
        try:
            msg = decode(mode, body)
        except (UnicodeDecodeError, ValueError) as e:
            emit(event="undecodable", error=str(e))
            continue
        on_message(msg)


def check_loopback(host):
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"peer.py: {host} is not a loopback address; the tests stay on loopback")


def serve(args):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(16)
    emit(event="listening", port=listener.getsockname()[1])
    clients = {}
    lock = threading.Lock()

    def handle(n, sock):
        read_frames(sock, args.format, lambda m: emit(event="message", client=n, message=m))
        with lock:
            clients.pop(n, None)
        sock.close()
        emit(event="closed", client=n)

    def accept():
        n = 0
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            n += 1
            with lock:
                clients[n] = sock
            emit(event="connected", client=n)
            threading.Thread(target=handle, args=(n, sock), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    for line in sys.stdin:
        data = encoded(args.format, line)
        if data is None:
            continue
        with lock:
            targets = list(clients.values())
        for sock in targets:
            try:
                sock.sendall(data)
            except OSError:
                pass
    listener.close()
    with lock:
        for sock in clients.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def client(args):
    sock = socket.create_connection((args.host, args.port), timeout=10)
    sock.settimeout(None)
    emit(event="connected")
    done = threading.Event()

    def reader():
        read_frames(sock, args.format, lambda m: emit(event="message", message=m))
        emit(event="closed")
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    for line in sys.stdin:
        if done.is_set():
            break
        data = encoded(args.format, line)
        if data is None:
            continue
        try:
            sock.sendall(data)
        except OSError:
            break
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    done.wait(5)
    sock.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--format", choices=["json", "string", "binary"], default="json")
    args = parser.parse_args()
    check_loopback(args.host)
    if args.role == "server":
        serve(args)
    else:
        client(args)


if __name__ == "__main__":
    main()
