"""Websocket game server: sessions, rooms with deadline ticks, XP via the datastore, health and metrics.

Entry points: ``gameserver.app.GameServer`` (in-process start/stop) and ``gameserver serve`` (CLI).
"""
