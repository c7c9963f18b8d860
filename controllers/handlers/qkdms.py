"""Run each KeyStream end's QKD module (QKDM) as a Deployment the KeyStream owns.

Switched on by the controller setting ``qkdm_pod_template`` (``QSS_QKDM_POD_TEMPLATE``, set by
the manager's manifest); off, the handler never runs and the QKDMs are someone else's to start
(the process-based test network runs them as processes). A timer per KeyStream applies the
Deployment built by ``controllers.qkdm_workloads`` at once and then every
``RECONCILE_SECONDS``, so a deleted Deployment comes back and a changed PodTemplate reaches the
QKDMs; server-side apply makes an unchanged Deployment a no-op. The garbage collector deletes
the Deployment with its KeyStream (owner reference).
"""

from __future__ import annotations

from typing import Any

import kopf

from controllers.kube import Kube, NotFoundError
from controllers.qkdm_workloads import WorkloadError, qkdm_deployment
from controllers.settings import ControllerSettings
from qss_api import KEYSTREAMS

# How soon a deleted QKDM Deployment or a changed pod template is put right.
RECONCILE_SECONDS = 10.0


def _managing(memo: kopf.Memo, **_: Any) -> bool:
    settings: ControllerSettings = memo["settings"]
    return settings.qkdm_pod_template is not None


@kopf.timer(KEYSTREAMS, interval=RECONCILE_SECONDS, initial_delay=0.0, when=_managing)
async def run_qkdm(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    settings: ControllerSettings = memo["settings"]
    kube: Kube = memo["kube"]
    assert settings.qkdm_pod_template is not None  # the `when` filter says so
    try:
        template = await kube.pod_template(settings.qkdm_pod_template, settings.namespace)
    except NotFoundError as exc:
        raise kopf.TemporaryError(f"cannot run this stream's QKD module: {exc}") from None
    try:
        deployment = qkdm_deployment(
            stream=dict(body), template=template, namespace=settings.namespace
        )
    except WorkloadError as exc:
        raise kopf.TemporaryError(f"cannot run this stream's QKD module: {exc}") from None
    await kube.apply_deployment(deployment)
