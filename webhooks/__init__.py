"""kube-qss webhooks: the mutating admission webhook that injects the key sidecar."""
