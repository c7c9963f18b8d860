"""The slave side's hand-over: keys a neighbour delivered to its master SAE become an automatic
slave KeyRequest here (the paper's "could be automated"), in the slave SAE's namespace, so the
slave SAE's Secret (or sidecar) gets the same keys by ID without anyone copying IDs by hand.
Called by the KRP hand-over route (``controllers.delivery.krp``), which the master node retries
until it answers; so this is idempotent per master request: the slave request is named after it.
"""

from __future__ import annotations

from controllers.delivery.krp import HandOverUnavailable
from controllers.delivery.messages import HandOver, HandOverSink
from controllers.delivery.service import SaeLookup
from controllers.kube import API_FAILURES, AlreadyExistsError, Kube, NotFoundError, api_failure
from qss_api import API_VERSION, KEYREQUESTS, KIND_KEYREQUEST, LABEL_PART_OF, PART_OF

LABEL_AUTOMATIC = "qss.dev/automatic"
LABEL_FROM_NODE = "qss.dev/from-node"


def slave_request_name(sae_name: str, request_id: str) -> str:
    """The automatic slave request of the master request ``request_id``."""
    return f"{sae_name}-{request_id}"[:253]


def slave_request_creator(kube: Kube, local_saes: SaeLookup) -> HandOverSink:
    """A hand-over sink that creates the slave KeyRequest when this node holds its keys, and
    otherwise says whether it exists already (a retried hand-over whose keys were delivered)."""

    async def create_slave_request(message: HandOver, held: bool, from_node: str) -> bool:
        found = local_saes.lookup(message.slave_sae)
        if found is None:
            raise HandOverUnavailable(f"SAE {message.slave_sae!r} is not registered here")
        namespace, sae_name = found
        name = slave_request_name(sae_name, message.request_id)
        try:
            if not held:
                try:
                    await kube.get(KEYREQUESTS, name, namespace)
                except NotFoundError:
                    return False
                return True
            body = {
                "apiVersion": API_VERSION,
                "kind": KIND_KEYREQUEST,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {
                        LABEL_PART_OF: PART_OF,
                        LABEL_AUTOMATIC: "true",
                        LABEL_FROM_NODE: from_node,
                    },
                },
                "spec": {
                    "sae": sae_name,
                    "masterSaeID": message.master_sae,
                    "keyIDs": list(message.key_ids),
                },
            }
            try:
                await kube.create(KEYREQUESTS, body, namespace=namespace)
            except AlreadyExistsError:
                pass  # a retried hand-over
        except API_FAILURES as exc:
            raise HandOverUnavailable(
                f"the slave request could not be created now ({api_failure(exc)}); try again"
            ) from None
        return True

    return create_slave_request
