"""An unmodified ETSI GS QKD 014 client, as an application would bring one: the Python standard
library only (urllib, json), no kube-qss code, no certificate. The tests run it with
``python -I -S`` (no site-packages at all) against a sidecar's loopback endpoint::

    python -I -S stdlib_014_client.py http://127.0.0.1:8014 status  <slave SAE ID>
    python -I -S stdlib_014_client.py http://127.0.0.1:8014 enc     <slave SAE ID> NUMBER SIZE
    python -I -S stdlib_014_client.py http://127.0.0.1:8014 dec     <master SAE ID> KEY_ID...
    python -I -S stdlib_014_client.py http://127.0.0.1:8014 enc-get <slave SAE ID> NUMBER SIZE
    python -I -S stdlib_014_client.py http://127.0.0.1:8014 dec-get <master SAE ID> KEY_ID...

It prints the answer's JSON document and exits 0 on 200, 1 otherwise.
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request


def call(method: str, url: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def main(argv: list[str]) -> int:
    base, command, sae = argv[1], argv[2], argv[3]
    prefix = f"{base}/api/v1/keys/{urllib.parse.quote(sae, safe='')}"
    document: object
    if command == "status":
        status, document = call("GET", f"{prefix}/status")
    elif command == "enc":
        status, document = call(
            "POST", f"{prefix}/enc_keys", {"number": int(argv[4]), "size": int(argv[5])}
        )
    elif command == "enc-get":
        query = urllib.parse.urlencode({"number": argv[4], "size": argv[5]})
        status, document = call("GET", f"{prefix}/enc_keys?{query}")
    elif command == "dec":
        ids = {"key_IDs": [{"key_ID": key_id} for key_id in argv[4:]]}
        status, document = call("POST", f"{prefix}/dec_keys", ids)
    elif command == "dec-get":
        query = urllib.parse.urlencode([("key_ID", key_id) for key_id in argv[4:]])
        status, document = call("GET", f"{prefix}/dec_keys?{query}")
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps({"status": status, "document": document}))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
