"""Simulated QKD device pair: what the tests and the demo use in place of QKD hardware.

Run as its own process: ``qss-qkd-sim pair --socket-a A --socket-b B --rate-bps N
--secret-file F`` (``main``). Both ends live in that one process, one Unix socket each; the
QKDM of each end of a link talks to one socket, the device plugin probes both with HEALTH.
Both ends yield the same key for the same (key stream ID, index), derived from the pair secret
(``keymaterial``), at the link's secret key rate (``link``).

The protocol is ``qss_api.qkd004`` (messages, status codes, reason words), shared with the QKDM
and the device plugin; ``protocol`` is this device's side of it. Beyond ETSI GS QKD 004 it offers
GET_KEY of a run of consecutive chunks (``count``), the peer's waiting streams in its
PEER_NOT_CONNECTED answers, HEALTH, and FAULT (link down, rate change, QBER above the threshold:
every open stream aborts; new ones are refused until the QBER is lowered). A restart of the pair
process loses every stream, as a real device restart does.
"""
