"""Loads the key store's Lua scripts (the ``*.lua`` files beside this module) into a client.

Redis has no includes, so every script is sent with one prelude: the status codes (generated
from ``codes.Status``, the one definition both languages use), the names of the stream's keys
(``layout.NAMES``, the order ``StreamKeys`` passes them in) and ``common.lua``'s helpers.
``register_script`` sends EVALSHA and reloads a script by itself when Redis has lost its
script cache (after a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from controllers.keystore.codes import lua_prelude
from controllers.keystore.layout import lua_key_names


def source(name: str) -> str:
    """The text of ``name`` (a file of this package)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def prelude() -> str:
    return lua_prelude() + lua_key_names() + source("common.lua")


@dataclass(frozen=True, slots=True)
class Scripts:
    configure: AsyncScript
    counts: AsyncScript
    add: AsyncScript
    cursor: AsyncScript
    drop: AsyncScript
    reserve_block: AsyncScript
    accept: AsyncScript
    activate: AsyncScript
    refuse: AsyncScript
    serve: AsyncScript
    claim: AsyncScript
    commit: AsyncScript
    cancel: AsyncScript
    hold: AsyncScript
    give_back: AsyncScript
    released: AsyncScript
    sweep: AsyncScript
    outbox: AsyncScript
    drop_peer: AsyncScript
    pool: AsyncScript
    relay: AsyncScript

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        head = prelude()
        loaded = {
            name: client.register_script(head + "\n" + source(f"{name}.lua"))
            for name in cls.__dataclass_fields__
        }
        return cls(**loaded)
