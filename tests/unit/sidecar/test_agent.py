"""The sidecar's key loop against an in-memory API server (the node played by hand): what it
asks for, what it writes, what it deletes, and that a restart at any point neither repeats nor
loses a delivery."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from qss_api.wire import decode
from sidecar.agent import RETRY_SECONDS, Agent
from sidecar.files import INDEX_FILE, Index
from sidecar.keyrequests import LABEL_POD_UID
from sidecar.keyring import Ring
from sidecar.kube import KubeError
from sidecar.settings import SidecarSettings
from sidecar.volume import KeyVolume
from tests.unit.sidecar.helpers import InMemoryKeyRequests, settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def agent(config: SidecarSettings, api: InMemoryKeyRequests, root: Path, clock: Clock) -> Agent:
    a = Agent(config, api, KeyVolume(root), clock=clock)
    a.restore()
    return a


def index(root: Path) -> Index:
    return decode(Index, (root / INDEX_FILE).read_bytes())


def ids(root: Path) -> list[str]:
    return [e.key_ID for e in index(root).keys]


async def test_master_asks_once_writes_what_it_got_and_consumes_the_request(tmp_path: Path) -> None:
    config, api, clock = settings(), InMemoryKeyRequests(), Clock()
    sidecar = agent(config, api, tmp_path, clock)
    await sidecar.round()
    (name,) = api.created
    request = api.objects[name]
    assert request["spec"] == {
        "sae": "alice",
        "slaveSaeID": "bob",
        "number": 2,
        "size": 256,
        "timeoutSeconds": 30,
    }
    assert request["metadata"]["labels"][LABEL_POD_UID] == config.pod_uid
    assert request["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": config.pod_name, "uid": config.pod_uid}
    ]
    await sidecar.round()
    assert api.created == [name]  # one in flight at a time
    keys = api.serve(name)
    await sidecar.round()
    assert name in api.deleted
    assert ids(tmp_path) == list(keys)
    for key_id, material in keys.items():
        assert (tmp_path / key_id).read_bytes() == material
    assert (tmp_path / "current").read_bytes() == keys[list(keys)[-1]]


async def test_master_refreshes_on_the_interval_and_keeps_at_most_max_keys(tmp_path: Path) -> None:
    config, api, clock = settings(), InMemoryKeyRequests(), Clock()
    sidecar = agent(config, api, tmp_path, clock)
    for refresh in range(4):
        await sidecar.round()
        api.serve(api.created[-1])
        await sidecar.round()
        assert len(api.created) == refresh + 1
        clock.now += 29
        await sidecar.round()
        assert len(api.created) == refresh + 1  # not due yet
        clock.now += 1
    assert len(ids(tmp_path)) == config.max_keys


async def test_a_failed_request_is_deleted_and_asked_again_soon(tmp_path: Path) -> None:
    config, api, clock = settings(refresh_seconds=600.0), InMemoryKeyRequests(), Clock()
    sidecar = agent(config, api, tmp_path, clock)
    await sidecar.round()
    first = api.created[-1]
    api.fail(first)
    await sidecar.round()
    assert first in api.deleted
    assert api.created == [first]
    clock.now += RETRY_SECONDS
    await sidecar.round()
    assert len(api.created) == 2


async def test_restart_after_writing_but_before_deleting_only_deletes(tmp_path: Path) -> None:
    config, api, clock = settings(), InMemoryKeyRequests(), Clock()
    sidecar = agent(config, api, tmp_path, clock)
    await sidecar.round()
    name = api.created[-1]
    api.serve(name)

    api.deletes_fail = True  # the process dies here, as far as the API server can tell
    with pytest.raises(KubeError):
        await sidecar.round()
    written = index(tmp_path)
    api.deletes_fail = False
    restarted = agent(config, api, tmp_path, clock)
    assert restarted.ring == sidecar.ring
    await restarted.round()
    assert name in api.deleted
    assert index(tmp_path) == written  # nothing written a second time


async def test_restart_before_writing_delivers_the_pending_request_once(tmp_path: Path) -> None:
    config, api, clock = settings(), InMemoryKeyRequests(), Clock()
    await agent(config, api, tmp_path, clock).round()
    name = api.created[-1]
    keys = api.serve(name)
    restarted = agent(config, api, tmp_path, clock)  # the first one died before its next round
    await restarted.round()
    assert ids(tmp_path) == list(keys)
    assert api.created == [name]  # it did not ask for another set while one was pending


async def test_restart_waits_out_the_rest_of_the_interval(tmp_path: Path) -> None:
    config, api, clock = settings(refresh_seconds=3600.0), InMemoryKeyRequests(), Clock()
    sidecar = agent(config, api, tmp_path, clock)
    await sidecar.round()
    api.serve(api.created[-1])
    await sidecar.round()
    await agent(config, api, tmp_path, clock).round()
    assert len(api.created) == 1


async def test_slave_takes_only_its_pairs_automatic_requests_and_claims_them(
    tmp_path: Path,
) -> None:
    config, api, clock = settings("slave"), InMemoryKeyRequests(), Clock()
    mine = api.automatic()
    other_sae = api.automatic(sae="carol")
    other_master = api.automatic(master="mallory")
    taken = api.automatic()
    api.objects[taken]["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Pod", "name": "other", "uid": "another-pod"}
    ]
    keys = api.serve(mine)
    sidecar = agent(config, api, tmp_path, clock)
    await sidecar.round()
    assert api.deleted == [mine]
    assert {other_sae, other_master, taken} <= set(api.objects)
    listed = index(tmp_path)
    assert ids(tmp_path) == list(keys)
    assert listed.keys[0].master_SAE_ID == "alice"
    assert listed.keys[0].slave_SAE_ID == "bob"
    assert listed.current == listed.keys[-1].key_ID
    assert api.created == []  # a slave never asks


async def test_slave_claims_a_pending_request_and_delivers_it_when_ready(tmp_path: Path) -> None:
    config, api, clock = settings("slave"), InMemoryKeyRequests(), Clock()
    name = api.automatic()
    sidecar = agent(config, api, tmp_path, clock)
    await sidecar.round()
    owners = api.objects[name]["metadata"]["ownerReferences"]
    assert owners == [
        {"apiVersion": "v1", "kind": "Pod", "name": config.pod_name, "uid": config.pod_uid}
    ]
    api.serve(name)
    await sidecar.round()
    assert name in api.deleted


async def test_a_ready_request_whose_secret_does_not_match_is_consumed_unserved(
    tmp_path: Path,
) -> None:
    config, api, clock = settings(), InMemoryKeyRequests(), Clock()
    sidecar = agent(config, api, tmp_path, clock)
    await sidecar.round()
    name = api.created[-1]
    api.serve(name)
    secret = api.secrets[f"{name}-keys"]
    container = json.loads(base64.b64decode(secret["keys.json"]))
    container["keys"].pop()
    secret["keys.json"] = base64.b64encode(json.dumps(container).encode()).decode()
    await sidecar.round()
    assert name in api.deleted
    assert not (tmp_path / INDEX_FILE).exists()
    assert sidecar.ring == Ring()
