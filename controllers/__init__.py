"""kube-qss controllers: the QSS node (kopf reconcilers, key store, routing, relay, ETSI 014 API, QKDM)."""
