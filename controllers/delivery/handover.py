"""The slave side's hand-over: keys a neighbour delivered to its master SAE become an automatic
slave KeyRequest here (the paper's "could be automated"), in the slave SAE's namespace, so the
slave SAE's Secret (or sidecar) gets the same keys by ID without anyone copying IDs by hand.
Called by the KRP hand-over route (``controllers.delivery.krp``).
"""

from __future__ import annotations

from controllers.delivery.api import UnknownSae
from controllers.delivery.krp import HandOver, HandOverSink
from controllers.delivery.service import SaeLookup
from controllers.kube import AlreadyExistsError, Kube
from qss_api import API_VERSION, KEYREQUESTS, KIND_KEYREQUEST, LABEL_PART_OF, PART_OF

LABEL_AUTOMATIC = "qss.dev/automatic"
LABEL_FROM_NODE = "qss.dev/from-node"


def slave_request_creator(kube: Kube, local_saes: SaeLookup) -> HandOverSink:
    """A hand-over sink that creates the slave KeyRequest (idempotent per master request)."""

    async def create_slave_request(message: HandOver) -> None:
        found = local_saes.lookup(message.slave_sae_id)
        if found is None:
            raise UnknownSae(
                f"SAE {message.slave_sae_id!r} is not registered here", retryable=False
            )
        namespace, sae_name = found
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND_KEYREQUEST,
            "metadata": {
                "name": f"{sae_name}-{message.request_id}"[:253],
                "namespace": namespace,
                "labels": {
                    LABEL_PART_OF: PART_OF,
                    LABEL_AUTOMATIC: "true",
                    LABEL_FROM_NODE: message.from_node,
                },
            },
            "spec": {
                "sae": sae_name,
                "masterSaeID": message.master_sae_id,
                "keyIDs": list(message.key_ids),
            },
        }
        try:
            await kube.create(KEYREQUESTS, body, namespace=namespace)
        except AlreadyExistsError:
            pass  # a retried hand-over

    return create_slave_request
