"""The KeyRequest handler: every KeyRequest event goes to the node's KeyRequest service
(``controllers.delivery.requests``), which serves the request to Ready or Failed.

A raw event handler, not kopf's create handler: the service is idempotent under the request's
UID and every hold it takes has a deadline, so nothing needs kopf's finalizer, progress or
diff-base annotations, each a write to the API server on the request's path. A request kopf
lists at start-up may have been cut off by a crash, so the service resumes it.
"""

from __future__ import annotations

from typing import Any

import kopf

from controllers.keyrequests import KeyRequestView
from controllers.node import runtime_of
from qss_api import KEYREQUESTS


@kopf.on.event(KEYREQUESTS)
async def keyrequest_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    if event["type"] == "DELETED":
        return
    request = KeyRequestView.from_body(body)
    if request is None or request.finished:
        return
    await runtime_of(memo).requests.serve(request=request, resume=event["type"] is None)
