"""The KeyRequest reconciler's pure parts: the key Secret, its ETSI key container, statuses."""

import base64
import json

from controllers.delivery.api import DeliveredKey
from controllers.keyrequests import (
    deadline_of,
    failed_status,
    key_ids_in_secret,
    key_secret,
    ready_status,
    role_of,
    secret_name,
)

KEYS = [
    DeliveredKey(key_id="0b0e7c7e-5d0c-4a4e-9a8e-2f2b7c1d9e01", material=b"\x01" * 32),
    DeliveredKey(key_id="1b0e7c7e-5d0c-4a4e-9a8e-2f2b7c1d9e02", material=b"\x02" * 32),
]


def test_secret_holds_each_key_under_its_id_and_an_etsi_key_container() -> None:
    secret = key_secret(name="k", namespace="ns", keys=KEYS, owner={"name": "r", "uid": "u-1"})
    data = secret["data"]
    assert base64.b64decode(data[KEYS[0].key_id]) == KEYS[0].material
    container = json.loads(base64.b64decode(data["keys.json"]))
    assert container == {
        "keys": [{"key_ID": k.key_id, "key": base64.b64encode(k.material).decode()} for k in KEYS]
    }
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("KeyRequest", "u-1", True)
    assert key_ids_in_secret(data) == [k.key_id for k in KEYS]


def test_key_material_never_appears_in_status() -> None:
    status = ready_status(
        role="Master",
        key_ids=[k.key_id for k in KEYS],
        secret="k",
        peer_node="node-b",
        started="2026-11-30T08:00:00.000Z",
        generation=1,
        at="2026-11-30T08:00:00.042Z",
    )
    text = json.dumps(status)
    for key in KEYS:
        assert base64.b64encode(key.material).decode() not in text
    assert status["durationMilliseconds"] == 42
    assert status["keyCount"] == 2


def test_failed_status_carries_the_reason() -> None:
    status = failed_status(
        role="Master", reason="InsufficientKeys", message="m", started=None, generation=1
    )
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "InsufficientKeys"
    assert status["conditions"][0]["status"] == "False"


def test_role_secret_name_and_deadline_follow_the_spec() -> None:
    assert role_of({"keyIDs": ["x"]}) == "Slave"
    assert role_of({"number": 1}) == "Master"
    assert secret_name("req", {}) == "req-keys"
    assert secret_name("req", {"secretName": "mine"}) == "mine"
    deadline = deadline_of({"creationTimestamp": "2026-11-30T08:00:00Z"}, {"timeoutSeconds": 5})
    assert deadline.isoformat() == "2026-11-30T08:00:05+00:00"
