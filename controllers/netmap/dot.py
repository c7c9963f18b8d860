"""Draws a ``NetworkMap`` as Graphviz DOT; pure (``controllers.netmap.main`` runs Graphviz).

QSS nodes are boxes (this node's doubled); SAEs are ellipses tied to their node by a dotted
line. A link this node serves is coloured by the fill of its key buffer (green from half full,
orange from a fifth, red below, grey when unknown) and labelled with its cost (equation 2), its
measured key rate and its fill; links known only from Route paths are dashed. With
``highlight``, the path of the Route to that SAE is drawn bold in blue, with its total cost.
"""

from __future__ import annotations

from controllers.netmap.model import Link, NetworkMap, RoutePath

GREEN, ORANGE, RED, GREY, BLUE = "#2e7d32", "#ef6c00", "#c62828", "#9e9e9e", "#1565c0"


def _q(text: str) -> str:
    """A DOT quoted string; a line break in ``text`` becomes DOT's centred line break."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _rate(bps: float) -> str:
    for unit, size in (("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= size:
            return f"{bps / size:.1f} {unit}"
    return f"{bps:.0f} bit/s"


def fill_colour(fill: float | None) -> str:
    if fill is None:
        return GREY
    if fill >= 0.5:
        return GREEN
    return ORANGE if fill >= 0.2 else RED


def _link_line(link: Link, on_path: bool) -> str:
    attrs: dict[str, str] = {}
    if link.local:
        parts = [f"cost {link.cost:.1f}" if link.cost is not None else "cost ?"]
        if link.rate_bps is not None:
            parts.append(_rate(link.rate_bps))
        if link.fill is not None:
            parts.append(f"{link.fill:.0%} full")
        if link.state and link.state != "Up":
            parts.append(link.state)
        attrs["label"] = "\n".join(parts)
        attrs["color"] = fill_colour(link.fill)
        attrs["penwidth"] = "2"
    else:
        attrs["style"] = "dashed"
        attrs["color"] = GREY
    if on_path:
        attrs["color"] = f"{BLUE}:{attrs['color']}" if link.local else BLUE
        attrs["penwidth"] = "4"
    rendered = ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())
    return f"  {_q(link.a)} -- {_q(link.b)} [{rendered}];"


def _path_edges(route: RoutePath | None) -> set[frozenset[str]]:
    if route is None:
        return set()
    return {frozenset(pair) for pair in zip(route.path, route.path[1:], strict=False)}


def render(network: NetworkMap, *, highlight: str | None = None) -> str:
    """DOT source of the network; ``highlight`` names an SAE whose Route path is emphasised
    (``KeyError`` if this node has no Route to it)."""
    route = None
    if highlight is not None:
        route = next((r for r in network.routes if r.sae_id == highlight), None)
        if route is None:
            raise KeyError(f"node {network.node_id} has no Route to SAE {highlight!r}")
    on_path = _path_edges(route)
    title = f"QKD network seen from {network.node_id}"
    if route is not None:
        title += f": route to {route.sae_id} (cost {route.cost:.1f}, {len(route.path) - 1} hops)"
    lines = [
        "graph qkd_network {",
        f"  label={_q(title)}; labelloc=t; fontname=Helvetica;",
        "  node [fontname=Helvetica]; edge [fontname=Helvetica, fontsize=10];",
    ]
    for node in network.nodes:
        peripheries = "2" if node == network.node_id else "1"
        lines.append(f"  {_q(node)} [shape=box, style=rounded, peripheries={peripheries}];")
    for link in network.links:
        lines.append(_link_line(link, link.ends in on_path))
    for node, sae_ids in network.saes.items():
        for sae_id in sae_ids:
            sae = f"sae:{node}:{sae_id}"
            colour = BLUE if route is not None and sae_id == route.sae_id else GREY
            lines.append(
                f"  {_q(sae)} [label={_q(sae_id)}, shape=ellipse, fontsize=10, color={_q(colour)}];"
            )
            lines.append(f"  {_q(node)} -- {_q(sae)} [style=dotted, color={_q(GREY)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
