"""URL paths of the inter-node channel that both ends know (the server serves them, the
client calls them). Modules that add routes keep their own paths beside their handlers."""

from typing import Final

# Built-in: a peer (or the link reconciler) checks that the channel works, both ways.
PING_PATH: Final = "/qss/v1/ping"
