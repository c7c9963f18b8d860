"""Simulated QKD device pair: what the tests and the demo use in place of QKD hardware.

Run as its own process: ``qss-qkd-sim pair --socket-a A --socket-b B --rate-bps N
--secret-file F`` (``main``). Both ends live in that one process, one Unix socket each; the
QKDM of each end of a link talks to one socket, the device plugin probes both with HEALTH.
Both ends yield the same key for the same (key stream ID, index), derived from the pair secret
(``keymaterial``), at the link's secret key rate (``link``).

Protocol (``protocol``): newline-delimited JSON, one request and one response per line; every
request has ``op``; an ``id`` field, if present, is echoed. ``status`` is always present.

- ``OPEN_CONNECT {source, destination, qos?, key_stream_ID?}`` -> ``{status, key_stream_ID,
  qos}``. ``qos`` fields (integers): ``key_chunk_size`` (BYTES per GET_KEY, default 16),
  ``max_bps`` (0: all the rate left), ``min_bps``, ``jitter``, ``priority``, ``timeout`` (ms a
  GET_KEY may wait for key, at most 60000), ``ttl``. A missing KSID gets a new UUID. The first
  end to open gets 1 (peer not connected); the peer opening the same KSID gets 0, and key
  generation starts then.
- ``GET_KEY {key_stream_ID, index?, metadata_size?}`` -> ``{status, index, key_buffer (base64),
  metadata}``; without ``index`` the end's next index. Chunk i exists once the stream has
  generated (i+1) chunks at its rate; the last ``--buffer-bits`` of key are kept.
- ``CLOSE {key_stream_ID}`` -> ``{status}``. A KSID closed at both ends is never reopened.
- ``HEALTH`` -> ``{status: 0, healthy, end, link_up, rate_bps, qber, qber_threshold, streams}``;
  healthy means link up and QBER at most the threshold.
- ``FAULT {link_down?, rate_bps?, qber?}`` -> as HEALTH. Faults belong to the link (both ends);
  link down stops generation and makes OPEN_CONNECT and GET_KEY answer 4 until it is up again;
  a QBER above the threshold aborts every open stream (GET_KEY answers 4, reason ``aborted``)
  and refuses new ones until it is lowered.

Status codes (ETSI GS QKD 004): 0 success, 1 peer not connected, 2 insufficient key (reason
``not_yet`` or ``expired``), 3 GET_KEY peer not connected, 4 no QKD connection (reasons
``link_down``, ``qber_too_high``, ``aborted``, ``unknown_ksid``), 5 KSID in use, 6 timeout,
7 QoS not met, 8 metadata size insufficient; and -1 for a malformed request. Every non-zero
response has ``reason`` (a stable word) and ``message`` (a sentence).
"""
