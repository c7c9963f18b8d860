"""QKDLink and KeyStream reconcilers of the controller.

A QKDLink is sampled on a timer: its streams' available keys give k_i(t), the paper's cost
K_i(t) follows, and its state follows its streams; an event marks every state change. Its
PeerTrusted condition says whether the channel to its peer works (the routing hellos are the
channel's heartbeat), and LsasVerified whether routing messages from the peer were dropped
(with a Warning Event for new drops; another when the peer becomes untrusted or unreachable).
Each sample also sets the link's metrics (cost, state, trust). A KeyStream gets its link's peer
and capacity, or a LinkNotFound condition (the QKDM owns the rest of the stream's status).
"""

from __future__ import annotations

from typing import Any

import kopf

from controllers import metrics
from controllers.channel import PeerCertificateError, PeerError
from controllers.conditions import Condition
from controllers.events import EventRecorder, Regarding
from controllers.kube import Kube, NotFoundError
from controllers.linkstatus import link_status, peer_condition, stream_link_status, streams_of
from controllers.node import NodeRuntime
from controllers.routing.status import drop_event, lsa_condition
from qss_api import KEYSTREAMS, QKDLINKS

# How often k_i(t) is sampled; also bounds how stale a link's cost can be.
LINK_SAMPLE_SECONDS = 2.0
# How often a KeyStream's link is looked up again (a link created after its stream, say).
STREAM_CHECK_SECONDS = 5.0
_DROPS_SEEN = "lsa_drops_seen"
_PEER_PROBLEM = "peer_problem"  # the reason of the peer trouble last told in an Event


def _kube(memo: kopf.Memo) -> Kube:
    kube: Kube = memo["kube"]
    return kube


@kopf.timer(QKDLINKS, interval=LINK_SAMPLE_SECONDS, initial_delay=0.0)
async def sample_link(
    name: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    kube = _kube(memo)
    streams = streams_of(name, await kube.list(KEYSTREAMS))
    node: NodeRuntime = memo["node"]
    problem = node.link_problems.get(name)
    refusal = node.refusals.latest_for_link(name)
    peer = str(body.get("spec", {}).get("peerNodeID", ""))
    called = node.routing.last_error.get(peer)
    trusted = peer_condition(
        problem=(problem.reason, problem.message) if problem else None,
        refusal=(refusal.reason, refusal.message) if refusal else None,
        rejected=called.message if isinstance(called, PeerCertificateError) else None,
        generation=int(body.get("metadata", {}).get("generation", 0)),
    )
    generation = int(body.get("metadata", {}).get("generation", 0))
    drops = node.routing.stats.drops_from(peer)
    verified = lsa_condition(drops, peer=peer, now=node.routing.now(), generation=generation)
    sample = link_status(dict(body), streams, extra=[trusted, verified])
    try:
        await kube.apply_status(QKDLINKS, name, sample.status)
    except NotFoundError:
        return  # deleted meanwhile
    metrics.link_sampled(
        link=name,
        peer=peer,
        state=sample.state,
        cost=float(sample.status["cost"]),
        available=int(sample.status["availableKeys"]),
        trusted=trusted["status"] == "True",
    )
    events: EventRecorder = memo["events"]
    link = Regarding.of(body)
    # kopf gives each object its own memo: how many drops this link's Events have told of.
    dropped = drop_event(drops, peer=peer, seen=memo.get(_DROPS_SEEN, 0))
    memo[_DROPS_SEEN] = drops.total
    if dropped is not None:
        events.record(link, type="Warning", reason="LsaDropped", note=dropped, action="Route")
    problem_now = _peer_problem(trusted, called)
    if problem_now is not None and problem_now[0] != memo.get(_PEER_PROBLEM):
        events.record(link, type="Warning", reason=problem_now[0], note=problem_now[1])
    memo[_PEER_PROBLEM] = problem_now[0] if problem_now else None
    if sample.changed:
        ready = next(c for c in sample.status["conditions"] if c["type"] == "Ready")
        events.record(
            link,
            type="Normal" if sample.state == "Up" else "Warning",
            reason=f"Link{sample.state}",
            note=f"link state {sample.previous_state or 'Unknown'} -> {sample.state}: "
            f"{ready['message']}",
        )
        logger.info("link %s is %s (cost %s)", name, sample.state, sample.status["cost"])


def _peer_problem(trusted: Condition, called: PeerError | None) -> tuple[str, str] | None:
    """(Event reason, note) while the peer is untrusted (PeerTrusted False) or did not answer
    this node's last routing hello; None while all is well."""
    if trusted["status"] != "True":
        return "PeerUntrusted", f"{trusted['reason']}: {trusted['message']}"
    if called is not None:
        return (
            "PeerUnreachable",
            f"the peer did not answer this node's last hello: {called.message}",
        )
    return None


@kopf.timer(KEYSTREAMS, interval=STREAM_CHECK_SECONDS, initial_delay=0.0)
async def check_stream_link(
    name: str, body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    kube = _kube(memo)
    try:
        link: dict[str, Any] | None = await kube.get(QKDLINKS, str(spec.get("link", "")))
    except NotFoundError:
        link = None
    status = stream_link_status(dict(body), link)
    try:
        await kube.apply_status(KEYSTREAMS, name, status)
    except NotFoundError:
        return
