"""Scale-out: the seams several game server nodes share (leases, presence, session directory, pub/sub,
ranking) as interfaces with ``Local*`` and Redis implementations, and ``ClusterNode``, a server's part in it.
See docs/scale-out.md."""

from .interfaces import Backend, NodeInfo, SessionEntry
from .local import LocalBackend, LocalHub
from .node import ClusterNode, RoomUnavailable

__all__ = ["Backend", "ClusterNode", "LocalBackend", "LocalHub", "NodeInfo", "RoomUnavailable",
           "SessionEntry"]
