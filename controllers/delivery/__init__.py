"""Key delivery between SAEs: what the KeyRequest reconciler and the ETSI GS QKD 014 API share.

``api`` names the contract (``KeyDelivery``, ``SaeDirectory``, the errors); the implementation
that reserves keys locally and on the peer node (KRP over the inter-node channel) lives beside it.
"""
