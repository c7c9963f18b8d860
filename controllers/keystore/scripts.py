"""Loads the key store's Lua scripts (the ``*.lua`` files beside this module) into a client.

``common.lua`` is a prelude of constants and helpers that every script starts with; Redis has
no includes, so it is prepended here. ``register_script`` sends EVALSHA and reloads the script
by itself when Redis has lost its script cache (after a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Scripts:
    configure: AsyncScript
    counts: AsyncScript
    add: AsyncScript
    reserve: AsyncScript
    reserve_ids: AsyncScript
    release: AsyncScript
    take: AsyncScript
    lookup: AsyncScript
    cursor: AsyncScript
    drop: AsyncScript

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        prelude = _source("common.lua")
        loaded = {
            name: client.register_script(prelude + "\n" + _source(f"{name}.lua"))
            for name in cls.__dataclass_fields__
        }
        return cls(**loaded)
