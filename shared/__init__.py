"""The wire protocol (version 1): message models, codec, errors, JSON Schema and an async client.

Modules: :mod:`shared.messages` (pydantic models), :mod:`shared.codec` (frames ⇄ models),
:mod:`shared.errors` (error codes, bye reasons, ``ProtocolError``), :mod:`shared.client`
(``GameClient``), :mod:`shared.schema` (JSON Schema generator). Reference: ``docs/protocol.md``.
"""

from .messages import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
