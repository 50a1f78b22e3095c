"""L7 engines any Envoy-shaped proxy applies to a request: pure functions, no sockets.

- `authz`: AuthorizationPolicy at L7 (`targetRefs` to a Service or a Gateway), with
  Istio's evaluation order and Envoy's RBAC denial (403 `RBAC: access denied`);
- `routes`: Gateway API HTTPRoute attached to a Service (`parentRefs` kind Service), with
  the spec's match precedence and weighted `backendRefs`.

The waypoint uses both; they take plain data (the snapshot's objects and an `L7Request`),
so their answers are unit-tested against the facts without a lab. Sources and what
differs from Istio: docs/waypoint.md.
"""
