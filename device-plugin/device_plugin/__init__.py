"""kube-qss device plugin: the kubelet device plugin for QKD devices, and the simulated QKD device."""
