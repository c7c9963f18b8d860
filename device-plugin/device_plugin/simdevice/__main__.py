"""``python -m device_plugin.simdevice``: the same as the ``qss-qkd-sim`` console script."""

from device_plugin.simdevice.main import main

raise SystemExit(main())
