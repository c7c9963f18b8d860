"""Helpers the end-to-end tests share: waiting for a condition, reading objects with kubectl,
applying KeyRequests and reading their outcome."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from controllers.keystore import Key, KeyStore
from tests.cluster.localcluster import Cluster
from tests.cluster.network import apply
from tests.waiting import eventually, eventually_async

__all__ = [
    "eventually",
    "eventually_async",
    "get",
    "keyrequest",
    "kubectl_json",
    "phase_of",
    "secret_keys",
    "take_on_both",
]


def kubectl_json(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    """``kubectl <args> -o json``, parsed; None when kubectl fails (e.g. not found)."""
    result = cluster.kubectl(*args, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    return kubectl_json(cluster, "get", kind, name, "-n", namespace)


def secret_keys(cluster: Cluster, name: str, namespace: str) -> dict[str, bytes]:
    secret = get(cluster, "secret", name, namespace)
    assert secret is not None, f"Secret {namespace}/{name} missing"
    return {k: base64.b64decode(v) for k, v in secret["data"].items() if k != "keys.json"}


def phase_of(cluster: Cluster, name: str, namespace: str) -> dict[str, Any] | None:
    obj = get(cluster, "keyrequest", name, namespace)
    if obj is None:
        return None
    status: dict[str, Any] = obj.get("status", {})
    return status if status.get("phase") in ("Ready", "Failed") else None


def keyrequest(cluster: Cluster, namespace: str, **spec: Any) -> str:
    name = f"kr-{uuid.uuid4().hex[:8]}"
    apply(
        cluster,
        {
            "apiVersion": "qss.dev/v1alpha1",
            "kind": "KeyRequest",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
    )
    return name


async def take_on_both(
    master: KeyStore, peer: KeyStore, *, stream: str, count: int, size_bits: int, owner: str
) -> tuple[list[Key], list[Key]]:
    """Take ``count`` keys out of both stores of a stream alike, as key delivery does (a block
    on ``master``, held on ``peer``, served on one, claimed on the other): the two lists of
    keys, in the same order."""
    block = await master.reserve_block(
        stream=stream,
        block_id=str(uuid.uuid4()),
        owner=owner,
        size_bits=size_bits,
        count=count,
        from_newest=False,
        lease_ms=60_000,
        pending_ms=60_000,
    )
    await peer.accept_block(
        stream=stream,
        block_id=block.block_id,
        owner=owner,
        size_bits=size_bits,
        keys=block.keys,
        lease_ms=60_000,
        held_max=10**9,
    )
    await master.activate_block(stream=stream, block_id=block.block_id, serve_ms=30_000)
    served = await master.take(stream=stream, owner=owner, size_bits=size_bits, count=count)
    keys = sorted(served.keys, key=lambda k: k.key_id)
    claimed = await peer.claim(stream=stream, owner=owner, key_ids=[k.key_id for k in keys])
    return keys, list(claimed)
