"""``python -m device_plugin``: the same as the ``qss-device-plugin`` console script."""

from device_plugin.main import main

main()
