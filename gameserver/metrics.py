"""Prometheus metrics, one ``CollectorRegistry`` per server so several servers can share a process.

Hot paths keep references to labelled children (``msg_in(t)`` caches them) instead of calling
``.labels()`` per message. The per-frame counts of client messages and bytes are plain ints
(``count_in``, ``tally_bytes_in``: a dict update instead of two locked counter increments per frame),
folded into their counters by the registry's first collector, so every read sees them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class _Fold:
    """The registry's first collector: folds the hot path's tallies into their counters before any read."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        self.metrics.fold()
        return []


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.tally_in: dict[str, int] = {}   # client messages by type, not yet in messages_in
        self.tally_bytes_in = 0              # frame bytes, not yet in bytes_in
        r.register(_Fold(self))
        self.sessions = Gauge("gameserver_sessions", "Live sessions (attached or in grace)", registry=r)
        self.connections = Gauge("gameserver_connections", "Open websocket connections", registry=r)
        self.messages_in = Counter("gameserver_messages_in", "Client messages by type", ["type"], registry=r)
        self.messages_out = Counter("gameserver_messages_out", "Server messages by type", ["type"],
                                    registry=r)
        self.bytes_in = Counter("gameserver_bytes_in", "Bytes received in frames", registry=r)
        self.bytes_out = Counter("gameserver_bytes_out", "Bytes sent in frames", registry=r)
        self.tick_duration = Histogram("gameserver_tick_duration_seconds", "Work per tick", ["room"],
                                       buckets=_FAST_BUCKETS, registry=r)
        self.tick_lag = Gauge("gameserver_tick_lag_seconds", "Lateness of the last tick start", ["room"],
                              registry=r)
        self.tick_overruns = Counter("gameserver_tick_overruns", "Ticks that missed their deadline",
                                     ["room"], registry=r)
        self.store_latency = Histogram("gameserver_datastore_op_seconds", "Datastore call latency", ["op"],
                                       buckets=_FAST_BUCKETS, registry=r)
        self.cas_retries = Counter("gameserver_cas_retries", "CAS attempts beyond the first", registry=r)
        # XP grants (gameserver/grants.py): started, retries by kind, not stored by why, waiting now
        self.grants = Counter("gameserver_xp_grants", "XP grants started", registry=r)
        self.grant_retries = Counter("gameserver_xp_grant_retries", "XP grant tries beyond the first, by "
                                     "the failed try's kind (failed, in_doubt)", ["kind"], registry=r)
        self.grant_failures = Counter("gameserver_xp_grant_failures", "XP grants not stored (final error, "
                                      "gave_up after persist.grant_retry_for, overflow, shutdown)", ["why"],
                                      registry=r)
        self.grants_pending = Gauge("gameserver_xp_grants_pending", "XP grants not stored yet (in flight or "
                                    "waiting to retry)", registry=r)
        self.store_degraded = Gauge("gameserver_store_degraded", "1 while work waits for an unavailable "
                                    "datastore (/health degraded)", registry=r)
        self.queue_drops = Counter("gameserver_queue_drops", "Dropped queued items by kind", ["kind"],
                                   registry=r)
        self.coalesced_ticks = Counter("gameserver_coalesced_ticks", "Ticks merged for slow sessions",
                                       registry=r)
        self.disconnects = Counter("gameserver_disconnects", "Closed connections by reason", ["reason"],
                                   registry=r)
        self.errors = Counter("gameserver_errors", "error replies by code", ["code"], registry=r)
        self.logins_refused = Counter("gameserver_logins_refused", "Logins refused by admission "
                                      "(busy, server_full)", ["reason"], registry=r)
        self.room_instances = Gauge("gameserver_room_instances", "Instances of each room run by this node",
                                    ["room"], registry=r)
        self.room_errors = Counter("gameserver_room_errors", "Exceptions raised by room code",
                                   ["room", "hook"], registry=r)
        self.replayed = Counter("gameserver_replayed_messages", "Messages replayed after a resume with seq",
                                registry=r)
        self.resumes = Counter("gameserver_resumes", "Resumes by outcome: recovered (everything after the "
                               "client's seq replayed), unrecovered (recovered: false), v1 (no seq)",
                               ["outcome"], registry=r)
        self._in: dict[str, Counter] = {}
        self._out: dict[str, Counter] = {}

    def count_in(self, t: str) -> None:
        """One client message of type ``t`` (every frame: a dict update, no counter lock)."""
        tally = self.tally_in
        tally[t] = tally.get(t, 0) + 1

    def fold(self) -> None:
        """Move the tallies into ``messages_in`` / ``bytes_in`` (the registry does it on every collect)."""
        tally, self.tally_in = self.tally_in, {}
        for t, n in tally.items():
            self.msg_in(t).inc(n)
        if self.tally_bytes_in:
            self.bytes_in.inc(self.tally_bytes_in)
            self.tally_bytes_in = 0

    def msg_in(self, t: str) -> Counter:
        child = self._in.get(t)
        if child is None:
            child = self._in[t] = self.messages_in.labels(t)
        return child

    def msg_out(self, t: str) -> Counter:
        child = self._out.get(t)
        if child is None:
            child = self._out[t] = self.messages_out.labels(t)
        return child

    def render(self) -> bytes:
        return generate_latest(self.registry)
