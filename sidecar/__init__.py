"""kube-qss sidecar: the key-delivery agent that writes keys as files beside the app."""
