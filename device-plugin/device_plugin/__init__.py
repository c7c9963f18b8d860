"""kube-qss device plugin: the kubelet device plugin for QKD devices, and the simulated QKD device.

``main`` is the entry point (console script ``qss-device-plugin``); ``lifecycle`` serves and
registers, ``servicer`` answers the kubelet, ``inventory`` keeps the devices and their health.
``simdevice`` (the simulated QKD device) is a separate program that only shares the package.
"""
