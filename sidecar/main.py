"""The ``qss-sidecar`` command, injected into pods by the kube-qss webhook.

``qss-sidecar run``: read ``SidecarSettings`` once from the environment the webhook set, resume
from the key volume, serve the ETSI 014 endpoint on 127.0.0.1 and run the key loop
(``sidecar.agent``) until SIGTERM or SIGINT; then finish the step in progress and exit 0.

The startup probe the webhook gives the container is not a command of this one: it tests for
``qss_api.sidecar.READY_FILE`` with coreutils (``webhooks.injection.startup_probe_command``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from qss_api.process import configure_logging
from sidecar.keyring import RingError
from sidecar.kube import KubeConfigError
from sidecar.service import serve
from sidecar.settings import SettingsError, SidecarSettings
from sidecar.volume import VolumeError


def run(environ: dict[str, str], *, verbose: bool) -> int:
    try:
        settings = SidecarSettings.from_env(environ)
    except SettingsError as exc:
        print(f"qss-sidecar: {exc}", file=sys.stderr)
        return 2
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    try:
        asyncio.run(serve(settings))
    except KubeConfigError as exc:
        logging.getLogger("sidecar").error("cannot reach the API server: %s", exc)
        return 2
    except (VolumeError, RingError) as exc:
        logging.getLogger("sidecar").error(
            "the key volume %s holds something this sidecar did not write (%s); refusing to "
            "guess which keys were served: delete the pod to start afresh",
            settings.keys_dir,
            exc,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qss-sidecar", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run(dict(os.environ), verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
