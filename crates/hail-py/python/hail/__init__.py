"""hail: devices on a local network find each other and talk.

``hail.Device`` is the asyncio device: it advertises itself on a multicast group, finds the
others, keeps one authenticated link to each (encrypted with a passphrase), sends them
messages by name, asks them questions and calls their named methods. ``hail.Connect`` is
pythonConnect's synchronous front over the same device. ``hail.Channel`` is the multicast
channel on its own: datagrams to and from a group, sealed with a passphrase. ``hail.Server``
and ``hail.Client`` are framed links with callbacks, Python Comms' wire included. Errors are exceptions under
``hail.HailError``, each with a ``kind``.

The work is done in Rust (the hail crates); this package is a thin binding.
"""

from hail._hail import (
    DEST_ALL,
    AmbiguousName,
    AuthFailed,
    BadArguments,
    Busy,
    Channel,
    Client,
    Closed,
    ConfigError,
    Connect,
    ConnectionLost,
    Device,
    DuplicateName,
    ErrorEvent,
    Events,
    Full,
    HailError,
    Message,
    NetworkError,
    NoAnswer,
    NotConnected,
    Peer,
    PeerJoined,
    PeerLeft,
    PeersChanged,
    RemoteError,
    Server,
    Timeout,
    TooLarge,
    UnknownMethod,
    UnknownName,
    Unreachable,
    __version__,
)

__all__ = [
    "DEST_ALL",
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
]
