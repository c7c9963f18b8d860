"""The wire messages of SAE announcements on the inter-node channel, read by both ends.

``POST /qss/v1/saes`` carries a node's ``SaeAnnouncement`` (its full SAE list) and is answered
with a ``SaeReceipt``; ``GET /qss/v1/saes`` answers the node's own ``SaeAnnouncement``, which
a node asks each neighbour for when it starts (``controllers.saes.announce``). Receivers read
every body with ``qss_api.wire.decode`` before any logic runs.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from qss_api.wire import NodeId, SaeId, WireModel

# Announcements carry nanosecond timestamps; a signed 64-bit integer holds them until 2262,
# and a larger number can only be an attempt to shut out every later announcement.
MAX_GENERATION: Final = 2**63 - 1
# The most SAEs one node announces; far above a real node's, small enough to bound the body.
MAX_SAES: Final = 100_000

Generation = Annotated[int, Field(ge=0, le=MAX_GENERATION)]


class SaeAnnouncement(WireModel):
    """A node's full list of SAEs under a generation that grows with every announcement."""

    node: NodeId
    generation: Generation
    saes: Annotated[tuple[SaeId, ...], Field(max_length=MAX_SAES)]


class SaeReceipt(WireModel):
    """The answer to an announcement: whether it was recorded, and the newest generation the
    receiver holds from the sender (so a sender whose clock went back can catch up)."""

    node: NodeId
    accepted: bool
    generation: Generation | None
