"""Room types: the game-author API (``Room``, ``Player``, ``on_message``, ``RoomError``), the runner that
drives room instances, and helpers any room can use (``AreaOfInterest``: grid areas of interest)."""

from .aoi import AreaOfInterest, Delivery
from .api import Player, Room, RoomError, on_message

__all__ = ["AreaOfInterest", "Delivery", "Player", "Room", "RoomError", "on_message"]
