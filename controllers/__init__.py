"""kube-qss controllers: the QSS node.

kopf reconcilers, key store, routing, relay, the ETSI 014 key API, and the QKD module (QKDM).
"""
