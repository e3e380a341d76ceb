"""Type stubs of hail's compiled module (``hail._hail``); import ``hail``, not this.

Kept in step with the Rust side by ``tests/test_stubs.py``: every public name and member
of the module is declared here, and nothing else.
"""

import os
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    ClassVar,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    final,
)

__all__ = [
    "AmbiguousName",
    "AuthFailed",
    "BadArguments",
    "Busy",
    "Channel",
    "Client",
    "Closed",
    "ConfigError",
    "Connect",
    "ConnectionLost",
    "DEST_ALL",
    "Device",
    "DuplicateName",
    "ErrorEvent",
    "Events",
    "Full",
    "HailError",
    "Message",
    "NetworkError",
    "NoAnswer",
    "NotConnected",
    "Peer",
    "PeerJoined",
    "PeerLeft",
    "PeersChanged",
    "RemoteError",
    "Server",
    "Timeout",
    "TooLarge",
    "UnknownMethod",
    "UnknownName",
    "Unreachable",
    "__version__",
    "_LoopWaker",
]
__version__: str

DEST_ALL: str
"""pythonConnect's ``dest`` for every joined device: ``"toAll"``."""

_Path = Union[str, "os.PathLike[str]"]
# `interface=`: a name ("lo", "eth0"), an index or an address ("127.0.0.1"), or a list.
_Interface = Union[str, Sequence[str], None]
# Whom to send to or ask: a name, a list of names, or None (every joined peer).
_To = Union[str, Sequence[str], None]
_Json = Any

# --- events ---------------------------------------------------------------------------

@final
class Peer:
    """A joined device: name, id (hex), link addresses, signed metadata."""

    __match_args__: ClassVar[Tuple[str, str, str, str]]
    @property
    def name(self) -> str:
        """The device's name."""
    @property
    def id(self) -> str:
        """Its id, hex (derived from the key its link proved)."""
    @property
    def addresses(self) -> List[str]:
        """Its link addresses, ``"ip:port"``, best first."""
    @property
    def metadata(self) -> Dict[str, str]:
        """The metadata it signed into its adverts (empty when none)."""

@final
class Message:
    """A message from a peer; ``sender`` and ``sender_id`` come from its proven link."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    @property
    def sender(self) -> str:
        """The sender's name."""
    @property
    def data(self) -> bytes:
        """The message."""
    @property
    def sender_id(self) -> str:
        """The sender's id, hex (``Peer.id``)."""

@final
class PeerJoined:
    """A peer is connected and ready."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def peer(self) -> Peer:
        """Who."""

@final
class PeerLeft:
    """A peer left: ``reason`` is ``"goodbye"``, ``"timeout"``, ``"connection_lost"`` or
    ``"restarted"``."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def peer(self) -> Peer:
        """Who."""
    @property
    def reason(self) -> str:
        """Why."""

@final
class PeersChanged:
    """The joined peers changed: all of them now, sorted by name then id."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def peers(self) -> List[Peer]:
        """The joined peers."""

@final
class DuplicateName:
    """Several live devices share a name (addressing it raises ``AmbiguousName``)."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def name(self) -> str:
        """The name."""
    @property
    def ids(self) -> List[str]:
        """The ids (hex) that hold it."""

@final
class ErrorEvent:
    """Something went wrong while the device runs; it keeps running."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def kind(self) -> str:
        """``"auth_failed"``, ``"dial_failed"``, ``"events_dropped"`` ..."""
    @property
    def message(self) -> str:
        """The Rust error's message."""

_Event = Union[PeersChanged, PeerJoined, PeerLeft, Message, DuplicateName, ErrorEvent]

@final
class Events:
    """The device's events, an async iterator (``Device.events()``)."""

    def __aiter__(self) -> AsyncIterator[_Event]:
        """``async for``: hands over each event already waiting with no await on hail's
        runtime; awaits ``__anext__`` only when none is."""
    def __anext__(self) -> Awaitable[_Event]: ...
    def try_next(self) -> Optional[_Event]:
        """The next event if one is waiting now, else ``None`` (also once closed). Never waits."""
    def batch(self, max: int = 256) -> Awaitable[List[_Event]]:
        """Every event waiting now, up to ``max`` (at least one); ``[]`` once closed."""
    def _next(self) -> Awaitable[_Event]: ...
    def _batch(self, max: int = 256) -> Awaitable[List[_Event]]: ...
    def _give_back(self, item: Any) -> None: ...

@final
class _LoopWaker:
    """Internal: where hail's runtime leaves the results of one event loop's awaitables."""

    def __new__(cls) -> "_LoopWaker": ...
    def fileno(self) -> int: ...
    def drain(self) -> None: ...

# --- the asyncio device ---------------------------------------------------------------

@final
class Device:
    """A device on the network: advertises itself, finds the others, sends to them by
    name, asks them questions and calls their methods. Bytes in, bytes out."""

    def __new__(
        cls,
        name: str,
        passphrase: Optional[str] = None,
        interface: _Interface = None,
        group: Optional[str] = None,
        listen: Optional[str] = None,
        *,
        identity_file: Optional[_Path] = None,
        known_devices: Optional[_Path] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> "Device": ...
    @property
    def name(self) -> str:
        """The device name."""
    @property
    def id(self) -> str:
        """The device's id, hex."""
    @property
    def address(self) -> str:
        """The ``"ip:port"`` links are accepted on."""
    @property
    def group(self) -> str:
        """The discovery group, ``"addr:port"``: the first of ``groups``."""
    @property
    def groups(self) -> List[str]:
        """The groups the device discovers on now, ``"addr:port"``, IPv4 first (by default
        both default groups where the interfaces have both families, following them).
        Once closed, the last ones (as every property; the methods raise ``Closed``)."""
    def peers(self) -> Dict[str, Peer]:
        """The joined peers by name."""
    def send(self, to: _To, data: bytes) -> Awaitable[Any]:
        """For one name: ``None``, or raises. For a list or None: a dict name -> ``None``
        or the exception."""
    def send_nowait(self, to: str, data: bytes) -> None:
        """Queues ``data`` now, or raises ``Full`` (``NotConnected``, ``UnknownName`` ...)."""
    def ask(
        self, to: _To, question: bytes, timeout: float = 2.0
    ) -> Awaitable[Dict[str, Union[bytes, "HailError"]]]:
        """A dict name -> answer, or the exception (``NoAnswer`` for no answer in time)."""
    def on_question(
        self, handler: Callable[[str, bytes], Union[bytes, Awaitable[bytes]]]
    ) -> None:
        """Answers peers' questions with ``handler(sender_name, question)``; once."""
    def bind(self, method: str, handler: Callable[[_Json], Union[_Json, Awaitable[_Json]]]) -> None:
        """Serves the named method: JSON-compatible argument and result."""
    def call(
        self, to: str, method: str, arg: _Json = None, timeout: float = 2.0
    ) -> Awaitable[_Json]:
        """Calls a peer's named method; its result decoded from JSON."""
    def events(self) -> Events:
        """``async for event in dev.events()``, until the device is closed."""
    def close(self) -> Awaitable[None]:
        """Says goodbye and stops; twice does nothing."""
    def __aenter__(self) -> Awaitable["Device"]: ...
    def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Awaitable[None]: ...

# --- pythonConnect's synchronous front ------------------------------------------------

@final
class Connect:
    """pythonConnect's ``Connect`` on hail: text in, text out; callbacks on a thread of
    their own; methods block with the GIL released."""

    DEST_ALL: ClassVar[str]
    def __new__(
        cls,
        name: Optional[str] = None,
        fr: Optional[Callable[[str, str], Any]] = None,
        fhu: Optional[Callable[[Dict[str, Optional[Tuple[str, int]]]], Any]] = None,
        fe: Optional[Callable[[BaseException], Any]] = None,
        fa: Optional[Callable[[str, str], Any]] = None,
        *,
        passphrase: Optional[str] = None,
        interface: _Interface = None,
        group: Optional[str] = None,
        listen: Optional[str] = None,
        multicast_ip: Optional[str] = None,
        port: Optional[int] = None,
        identity_file: Optional[_Path] = None,
        known_devices: Optional[_Path] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> "Connect": ...
    @property
    def name(self) -> str:
        """The device name."""
    @property
    def remoteDevices(self) -> Dict[str, Optional[Tuple[str, int]]]:
        """The joined devices: name -> ``(ip, port)``."""
    def sendMessage(self, message: str, dest: _To) -> None:
        """Sends; failed targets go to ``fe``."""
    def send_message(self, message: str, dest: _To) -> Dict[str, Optional["HailError"]]:
        """Sends; a dict name -> ``None`` or the exception."""
    def askDevice(self, question: str, dest: _To, timeout: float = 2.0) -> Dict[str, str]:
        """A dict name -> answer, ``""`` for no answer in time."""
    def ask_device(
        self, question: str, dest: _To, timeout: float = 2.0
    ) -> Dict[str, Union[str, "HailError"]]:
        """A dict name -> answer, or the exception (``NoAnswer`` ...)."""
    def peers(self) -> List[str]:
        """The joined devices' names."""
    def close(self) -> None:
        """Says goodbye and stops; twice does nothing."""
    def leavingNetwork(self) -> None:
        """pythonConnect's name for ``close()``."""
    def __enter__(self) -> "Connect": ...
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None: ...

# --- the multicast channel ------------------------------------------------------------

@final
class Channel:
    """A UDP multicast group: datagrams to and from every member, sealed with a key from a
    passphrase when one is given (dropped and counted when they do not open)."""

    def __new__(
        cls,
        group: str,
        passphrase: Optional[str] = None,
        interface: _Interface = None,
        ttl: int = 1,
        loopback: bool = True,
    ) -> "Channel": ...
    @property
    def group(self) -> str:
        """The group, ``"addr:port"``."""
    @property
    def max_payload(self) -> int:
        """The largest payload one datagram carries."""
    def send(self, data: bytes) -> Awaitable[None]:
        """Sends ``data`` to the group; ``TooLarge`` past ``max_payload``."""
    def recv(self, timeout: Optional[float] = None) -> Awaitable[Tuple[bytes, str]]:
        """The next datagram as ``(data, "ip:port")``; ``Timeout``, ``Closed``. A
        cancelled ``recv`` loses no datagram: one it had taken comes next."""
    def _recv(self, timeout: Optional[float] = None) -> Awaitable[Tuple[bytes, str]]: ...
    def _give_back(self, item: Tuple[bytes, str]) -> None: ...
    def stats(self) -> Dict[str, int]:
        """The counters: sent, delivered, dropped by reason."""
    def close(self) -> None:
        """Leaves the group; a waiting ``recv`` raises ``Closed``."""
    def __aenter__(self) -> Awaitable["Channel"]: ...
    def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Awaitable[None]: ...

# --- framed links ---------------------------------------------------------------------

_Mode = str  # "bytes", "string" or "json"

@final
class Server:
    """A framed TCP server for many clients; callbacks for connect, message and close."""

    def __new__(
        cls,
        listen: str = "127.0.0.1:0",
        *,
        passphrase: Optional[str] = None,
        mode: _Mode = "bytes",
        python_comms: bool = False,
        max_clients: Optional[int] = None,
        on_connect: Optional[Callable[[int, str], Any]] = None,
        on_message: Optional[Callable[[int, Any], Any]] = None,
        on_close: Optional[Callable[[int, str], Any]] = None,
    ) -> "Server": ...
    @property
    def address(self) -> str:
        """The ``"ip:port"`` the server accepts on."""
    def clients(self) -> Dict[int, str]:
        """The connected clients: id -> ``"ip:port"``."""
    def send_to(self, client_id: int, message: Any) -> Awaitable[None]:
        """Sends to one client, waiting while its queue is full."""
    def broadcast(self, message: Any) -> int:
        """Queues for every client; how many queued it."""
    def disconnect(self, client_id: int) -> bool:
        """Closes one client gracefully."""
    def stats(self) -> Dict[str, int]:
        """The server's counters."""
    def close(self, deadline: float = 1.0) -> Awaitable[None]:
        """Closes gracefully within ``deadline`` seconds."""
    def __aenter__(self) -> Awaitable["Server"]: ...
    def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Awaitable[None]: ...

@final
class Client:
    """A framed TCP client that reconnects by itself; callbacks for connect, message and
    close."""

    def __new__(
        cls,
        address: str,
        *,
        passphrase: Optional[str] = None,
        mode: _Mode = "bytes",
        python_comms: bool = False,
        reconnect: bool = True,
        on_connect: Optional[Callable[[str], Any]] = None,
        on_message: Optional[Callable[[Any], Any]] = None,
        on_close: Optional[Callable[[str], Any]] = None,
    ) -> "Client": ...
    @property
    def address(self) -> str:
        """The server's ``"ip:port"``."""
    @property
    def connected(self) -> bool:
        """Whether a connection is up now."""
    def send(self, message: Any) -> Awaitable[None]:
        """Sends to the server (the outage buffer while disconnected)."""
    def send_nowait(self, message: Any) -> None:
        """Queues now, or raises ``Full``."""
    def stats(self) -> Dict[str, int]:
        """The client's counters."""
    def close(self) -> Awaitable[int]:
        """Closes gracefully; how many buffered messages were discarded."""
    def __aenter__(self) -> Awaitable["Client"]: ...
    def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Awaitable[None]: ...

# --- errors ---------------------------------------------------------------------------

class HailError(Exception):
    """Base of every hail error; ``kind`` names the failure."""

    kind: ClassVar[str]

class ConfigError(HailError): ...
class NetworkError(HailError): ...
class Closed(HailError): ...
class UnknownName(HailError): ...
class AmbiguousName(HailError): ...
class NotConnected(HailError): ...
class Full(HailError): ...
class TooLarge(HailError): ...
class Timeout(HailError): ...
class NoAnswer(Timeout): ...
class Unreachable(HailError): ...
class ConnectionLost(HailError): ...
class RemoteError(HailError): ...
class UnknownMethod(RemoteError): ...
class BadArguments(RemoteError): ...
class Busy(HailError): ...
class AuthFailed(HailError): ...
