"""A picture of the QKD network as one QSS node sees it (``qss-netmap``).

``model.build_map`` turns the node's QKDLinks, KeyStreams, Saes and Routes into a
``NetworkMap`` (pure); ``dot.render`` draws that as Graphviz DOT (pure); ``main`` reads the
objects from the API server and writes DOT and, through Graphviz's ``dot``, SVG.
"""
