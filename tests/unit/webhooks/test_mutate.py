"""``mutate`` on its own: what an opted-in pod gets, what it never touches, what it denies and
why, and that a second pass (a reinvocation, a re-created pod) changes nothing."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from qss_api import sidecar as names
from tests.unit.webhooks.helpers import (
    CONFIG,
    NAMESPACE,
    InMemorySaes,
    alice,
    apply_patch,
    operations,
    review,
    run,
)
from tests.webhook_cases import APP_UID, BAD_PODS, PEER_SAE_ID, SAE_ID, BadPod, annotated_pod
from webhooks.mutate import mutate


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def _injected(pod: dict[str, Any], saes: InMemorySaes | None = None) -> dict[str, Any]:
    response = await run(pod, saes)
    assert response.allowed, response.status
    return apply_patch(pod, operations(response))


async def test_master_pod_gets_the_native_sidecar_its_volumes_and_a_read_only_mount() -> None:
    pod = await _injected(annotated_pod())

    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["name"] == names.CONTAINER_NAME
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == CONFIG.sidecar_image
    assert sidecar["startupProbe"]["exec"]["command"] == [
        "test",
        "-f",
        f"{names.DEFAULT_KEYS_DIR}/..data/index.json",
    ]
    env = _env(sidecar)
    assert env[names.ENV_ROLE] == "master"
    assert env[names.ENV_SAE] == "alice"
    assert env[names.ENV_SAE_ID] == SAE_ID
    assert env[names.ENV_PEER_SAE_ID] == PEER_SAE_ID
    assert env[names.ENV_KEY_SIZE] == "256"
    assert env[names.ENV_KEY_NUMBER] == "1"
    assert env[names.ENV_REFRESH_SECONDS] == "30"
    assert env[names.ENV_MAX_KEYS] == "10"
    assert env[names.ENV_KEYS_DIR] == names.DEFAULT_KEYS_DIR
    assert env[names.ENV_POD_UID] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    security = sidecar["securityContext"]
    assert security["runAsUser"] == APP_UID
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    sidecar_mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert sidecar_mounts[names.KEYS_VOLUME]["mountPath"] == names.DEFAULT_KEYS_DIR
    assert not sidecar_mounts[names.KEYS_VOLUME].get("readOnly")
    assert sidecar_mounts[names.CREDENTIALS_VOLUME]["readOnly"] is True

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[names.KEYS_VOLUME]["emptyDir"]["medium"] == "Memory"
    assert volumes[names.CREDENTIALS_VOLUME]["secret"]["secretName"] == "alice-credentials"
    assert volumes[names.TOKEN_VOLUME]["projected"]["sources"][0]["serviceAccountToken"]
    (app,) = pod["spec"]["containers"]
    assert app["volumeMounts"] == [
        {"name": names.KEYS_VOLUME, "mountPath": names.DEFAULT_KEYS_DIR, "readOnly": True}
    ]
    # The credentials reach the sidecar only.
    assert all(
        m["name"] != names.CREDENTIALS_VOLUME
        for c in pod["spec"]["containers"]
        for m in c["volumeMounts"]
    )
    assert pod["metadata"]["annotations"]["qss.dev/inject-status"] == "injected"


async def test_slave_pod_gets_no_master_settings_and_its_own_mount_path() -> None:
    pod = annotated_pod(
        role="slave", annotations={"qss.dev/mount-path": "/keys", "qss.dev/max-keys": "3"}
    )
    injected = await _injected(pod)
    env = _env(injected["spec"]["initContainers"][0])
    assert env[names.ENV_ROLE] == "slave"
    assert names.ENV_KEY_SIZE not in env
    assert names.ENV_REFRESH_SECONDS not in env
    assert env[names.ENV_MAX_KEYS] == "3"
    assert env[names.ENV_KEYS_DIR] == "/keys"
    assert injected["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/keys"


async def test_max_keys_defaults_to_two_refreshes_worth_and_at_least_ten() -> None:
    injected = await _injected(annotated_pod(annotations={"qss.dev/key-number": "8"}))
    assert _env(injected["spec"]["initContainers"][0])[names.ENV_MAX_KEYS] == "16"


async def test_sidecar_goes_first_and_existing_lists_are_appended_to() -> None:
    pod = annotated_pod()
    pod["spec"]["initContainers"] = [{"name": "setup", "image": "registry.invalid/setup:1"}]
    pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    response = await run(pod)
    paths = [op["path"] for op in operations(response)]
    assert "/spec/initContainers/0" in paths
    assert "/spec/volumes/-" in paths
    assert "/spec/containers/0/volumeMounts/-" in paths
    injected = apply_patch(pod, operations(response))
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["qss-sidecar", "setup"]
    assert next(v["name"] for v in injected["spec"]["volumes"]) == "data"


async def test_annotation_key_is_escaped_in_the_patch_path() -> None:
    paths = [op["path"] for op in operations(await run(annotated_pod()))]
    assert "/metadata/annotations/qss.dev~1inject-status" in paths


async def test_a_second_pass_over_the_injected_pod_changes_nothing() -> None:
    injected = await _injected(annotated_pod())
    again = await run(injected)
    assert again.allowed
    assert again.patch is None


async def test_a_second_pass_after_the_api_server_filled_in_defaults_changes_nothing() -> None:
    injected = await _injected(annotated_pod())
    defaulted = copy.deepcopy(injected)
    sidecar = defaulted["spec"]["initContainers"][0]
    sidecar.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
    sidecar["startupProbe"].update(timeoutSeconds=1, successThreshold=1)
    for entry in sidecar["env"]:
        if "valueFrom" in entry:
            entry["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
    assert (await run(defaulted)).patch is None


async def test_reinvocation_after_another_webhook_added_a_container_mounts_only_that_one() -> None:
    injected = await _injected(annotated_pod())
    injected["spec"]["containers"].append({"name": "proxy", "image": "registry.invalid/proxy:1"})
    ops = operations(await run(injected))
    assert ops == [
        {
            "op": "add",
            "path": "/spec/containers/1/volumeMounts",
            "value": [
                {"name": names.KEYS_VOLUME, "mountPath": names.DEFAULT_KEYS_DIR, "readOnly": True}
            ],
        }
    ]


async def test_an_outdated_sidecar_of_an_injected_pod_is_replaced_not_duplicated() -> None:
    injected = await _injected(annotated_pod())
    injected["spec"]["initContainers"][0]["image"] = "kube-qss:older"
    ops = operations(await run(injected))
    assert [(op["op"], op["path"]) for op in ops] == [("replace", "/spec/initContainers/0")]
    assert ops[0]["value"]["image"] == CONFIG.sidecar_image


@pytest.mark.parametrize(
    ("why", "pod", "namespace", "operation"),
    [
        ("no label", annotated_pod(labels={"qss.dev/inject": "false"}), NAMESPACE, "CREATE"),
        ("kube-system", annotated_pod(), "kube-system", "CREATE"),
        ("webhook's namespace", annotated_pod(), "kube-qss-system", "CREATE"),
        (
            "webhook's own pod",
            annotated_pod(
                labels={
                    "app.kubernetes.io/name": "kube-qss-webhook",
                    "app.kubernetes.io/part-of": "kube-qss",
                }
            ),
            NAMESPACE,
            "CREATE",
        ),
        ("an update", annotated_pod(), NAMESPACE, "UPDATE"),
    ],
)
async def test_pods_it_must_not_touch_are_allowed_unchanged_without_a_lookup(
    why: str, pod: dict[str, Any], namespace: str, operation: str
) -> None:
    saes = InMemorySaes(alice(namespace))
    unlabelled = copy.deepcopy(pod)
    response = await run(pod, saes, namespace=namespace, operation=operation)
    assert response.allowed, why
    assert response.patch is None, why
    assert saes.reads == 0, why
    assert pod == unlabelled


async def test_a_pod_without_the_label_is_untouched_whatever_its_annotations() -> None:
    pod = annotated_pod(annotations={"qss.dev/role": "nonsense"})
    del pod["metadata"]["labels"]["qss.dev/inject"]
    response = await run(pod)
    assert response.allowed
    assert response.patch is None


async def test_other_kinds_are_allowed_unchanged() -> None:
    response = await run(annotated_pod(), kind=("apps", "v1", "Deployment"))
    assert response.allowed
    assert response.patch is None


@pytest.mark.parametrize("case", BAD_PODS, ids=lambda c: c.id)
async def test_bad_pod_is_denied_with_a_message_saying_what_to_fix(case: BadPod) -> None:
    response = await run(case.pod("bad"))
    assert not response.allowed
    assert response.status is not None
    assert response.status.code == 400
    for words in case.expected:
        assert words in response.status.message, (case.id, response.status.message)
    assert response.status.message.startswith(
        f"kube-qss cannot inject keys into pod {NAMESPACE}/bad"
    )


def test_the_bad_pod_table_is_at_least_fifteen_distinct_cases() -> None:
    assert len({c.id for c in BAD_PODS}) == len(BAD_PODS) >= 15


async def test_every_problem_of_a_pod_is_listed_in_one_denial() -> None:
    pod = annotated_pod(annotations={"qss.dev/role": "boss", "qss.dev/peer-sae": "no spaces"})
    pod["spec"]["hostNetwork"] = True
    response = await run(pod)
    assert response.status is not None
    message = response.status.message
    assert "qss.dev/role" in message
    assert "qss.dev/peer-sae" in message
    assert "hostNetwork" in message


async def test_an_unreadable_sae_is_a_retryable_denial_not_an_error() -> None:
    saes = InMemorySaes(alice())
    saes.failing = True
    response = await run(annotated_pod(), saes)
    assert not response.allowed
    assert response.status is not None
    assert response.status.code == 503
    assert "retry" in response.status.message


async def test_a_sae_of_the_same_name_in_another_namespace_does_not_count() -> None:
    response = await run(annotated_pod(), InMemorySaes(alice("team-b")))
    assert response.status is not None
    assert "does not exist in namespace 'team-a'" in response.status.message


async def test_apps_that_mount_the_pods_token_get_a_warning() -> None:
    pod = annotated_pod()
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    ]
    response = await run(pod)
    assert response.allowed
    assert response.warnings
    assert "automountServiceAccountToken: false" in response.warnings[0]
    assert (await run(annotated_pod())).warnings is None


async def test_a_pod_that_is_not_a_pod_is_denied_saying_what_is_wrong() -> None:
    pod = annotated_pod()
    pod["spec"]["containers"] = "app"
    response = await run(pod)
    assert not response.allowed
    assert response.status is not None
    assert "spec.containers" in response.status.message


async def test_a_sidecar_metrics_port_is_injected_as_a_named_port_and_guarded() -> None:
    config = dataclasses.replace(CONFIG, metrics_port=9465)
    saes = InMemorySaes(alice())
    response = await mutate(review(annotated_pod()), saes=saes, config=config)
    assert response.allowed, response.status
    pod = apply_patch(annotated_pod(), operations(response))
    sidecar = pod["spec"]["initContainers"][0]
    assert _env(sidecar)[names.ENV_METRICS_PORT] == "9465"
    assert sidecar["ports"] == [
        {"name": names.METRICS_PORT_NAME, "containerPort": 9465, "protocol": "TCP"}
    ]
    # Without the setting: no port, no variable.
    plain = await _injected(annotated_pod())
    assert "ports" not in plain["spec"]["initContainers"][0]
    assert names.ENV_METRICS_PORT not in _env(plain["spec"]["initContainers"][0])
    # An app declaring that port is told to use another.
    clash = annotated_pod()
    clash["spec"]["containers"][0]["ports"] = [{"containerPort": 9465}]
    denied = await mutate(review(clash), saes=saes, config=config)
    assert not denied.allowed
    assert denied.status is not None
    assert "port 9465" in (denied.status.message or "")
    assert "metrics" in (denied.status.message or "")
