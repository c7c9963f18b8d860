"""The ``qss-sidecar`` command, injected into pods by the kube-qss webhook.

``qss-sidecar run``: read ``SidecarSettings`` once from the environment the webhook set, resume
from the key volume, serve the ETSI 014 endpoint on 127.0.0.1 and run the key loop
(``sidecar.agent``) until SIGTERM or SIGINT; then finish the step in progress and exit 0.

``qss-sidecar ready``: the startup probe. Exit 0 once the first keys are in the volume. The
kubelet runs it every second until it passes, so it imports nothing heavy (this module's other
imports happen inside ``run``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qss_api import sidecar as names

READY_FILE = "..data/index.json"


def ready(environ: dict[str, str]) -> int:
    keys_dir = Path(environ.get(names.ENV_KEYS_DIR) or names.DEFAULT_KEYS_DIR)
    if (keys_dir / READY_FILE).is_file():
        return 0
    print(f"no keys in {keys_dir} yet", file=sys.stderr)
    return 1


def run(environ: dict[str, str], *, verbose: bool) -> int:
    import asyncio
    import logging

    from qss_api.process import configure_logging
    from sidecar.keyring import RingError
    from sidecar.service import serve
    from sidecar.settings import SettingsError, SidecarSettings
    from sidecar.volume import VolumeError

    try:
        settings = SidecarSettings.from_env(environ)
    except SettingsError as exc:
        print(f"qss-sidecar: {exc}", file=sys.stderr)
        return 2
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    try:
        asyncio.run(serve(settings))
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
    parser.add_argument("command", choices=["run", "ready"])
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ)
    if args.command == "ready":
        return ready(environ)
    return run(environ, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
