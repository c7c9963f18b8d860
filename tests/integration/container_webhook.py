"""A second mutating webhook, for the reinvocation test: it adds a container named ``late`` to
pods labelled ``qss-test/add-container: "true"``, as a service mesh adds its proxy after other
webhooks have run. Standard library only; run as a process by ``test_webhook.py``::

    python -m tests.integration.container_webhook PORT CERT_FILE KEY_FILE
"""

from __future__ import annotations

import base64
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONTAINER = {"name": "late", "image": "registry.invalid/late:1"}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        containers = request["object"]["spec"]["containers"]
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if all(c["name"] != CONTAINER["name"] for c in containers):
            patch = [{"op": "add", "path": "/spec/containers/-", "value": CONTAINER}]
            response.update(
                patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode()
            )
        body = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
