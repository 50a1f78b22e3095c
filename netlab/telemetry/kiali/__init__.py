"""Kiali's graph, security and edge-panel logic for Kiali 1.89, 2.0 and 2.1.

The two Kiali field reports netlab reproduces (kiali#7811, kiali#7774) are bugs in
*which PromQL* Kiali sends and *how it folds the answers*, so this package mirrors
both exactly, per version, and nothing else of Kiali. docs/kiali.md lists each
fact with its upstream source.

Entry points:
- `queries`: the PromQL strings (graph, security appender, edge panel);
- `graph.build_graph(version, namespaces, query_fn, options)`: Kiali's cytoscape JSON;
- `panel.edge_panel(version, edge, query_range_fn, ...)`: the edge side panel's TCP series;
- `render`: SVG/HTML pictures with graphviz's `dot`, and sparklines;
- `selectors`: parse a query's label matchers, to explain which series it selects.
"""

from netlab.telemetry.kiali.versions import VERSIONS, Features, features

__all__ = ["VERSIONS", "Features", "features"]
