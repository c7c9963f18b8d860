"""The QKD module (QKDM): one process per key-stream end, ``qss-qkdm``.

It reconciles the one KeyStream it serves (``main``): opens the stream on its QKD device with
the ETSI GS QKD 004 interface (``device``), pulls key chunks in index order and pushes them into
the node's key store under IDs both ends derive alike (``ids``), stops pulling while the
stream's buffer is full, and reports the stream's status at a bounded rate (``status``).
"""
