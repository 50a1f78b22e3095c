"""HTTPRoute attached to a Service (Gateway API "GAMMA"), as a waypoint routes with it.

Which routes: those in the Service's namespace whose `parentRefs` name it (`kind: Service`,
group "" or `core`, same namespace unless the ref says otherwise; a ref with a `port` only
for that Service port). Without any, the Service routes to itself (istio.io ambient
"data plane": "by default the Service routes to itself"), route name `default`. With
routes but no match, Envoy answers 404 `NR route_not_found`.

Matching (Gateway API v1 `HTTPRouteMatch`): a rule without `matches` matches every
request (PathPrefix `/`); a match ANDs its path, method, headers and query parameters;
PathPrefix is element-wise (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`); header
names compare case-insensitively; `Exact` is the default type.

Precedence across all rules of all attached routes (the spec's order): an Exact path,
then the longest PathPrefix, then a method match, then the most header matches, then the
most query matches; ties go to the route's `namespace/name` in alphabetical order (the
spec's creation-time criterion has nothing to read in a file), then rule order. The spec
leaves RegularExpression paths to the implementation; netlab ranks them after Exact and
before any prefix.

`backendRefs` are picked per request by weight (default 1, 0 never); a rule whose weights
are all 0, or which has no backendRefs, answers 500 (the spec's "invalid backend").
Filters (header modifiers, redirects, mirrors, rewrites) are not modelled: a rule that has
them is still routed, and `Route.ignored` says what was left out.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from netlab.snapshot import HttpRoute

DEFAULT_ROUTE = "default"


@dataclass(frozen=True)
class Backend:
    """A Service to send to: name, namespace and port."""

    namespace: str
    name: str
    port: int


@dataclass(frozen=True)
class Route:
    """The chosen route for one request."""

    name: str  # the access log's %ROUTE_NAME%
    backend: Backend | None  # None: answer `status` locally
    status: int = 0  # 404 (no route), 500 (no usable backend); 0 when there is a backend
    ignored: tuple[str, ...] = ()  # filters present on the rule and not modelled


def parent_matches(route: HttpRoute, ns: str, name: str, port: int) -> bool:
    for ref in (route.spec or {}).get("parentRefs") or []:
        if ref.get("kind") != "Service" or (ref.get("group") or "") not in ("", "core"):
            continue
        if (ref.get("namespace") or route.namespace) != ns or ref.get("name") != name:
            continue
        if ref.get("port") not in (None, port):
            continue
        return True
    return False


def attached(routes: Sequence[HttpRoute], ns: str, name: str, port: int) -> list[HttpRoute]:
    """The producer routes of Service `ns/name` port `port` (same namespace)."""
    return [r for r in routes if r.namespace == ns and parent_matches(r, ns, name, port)]


def _prefix_match(prefix: str, path: str) -> bool:
    p = prefix.rstrip("/")
    return p == "" or path == p or path.startswith(p + "/")


def _value_match(m: dict[str, Any], actual: str | None) -> bool:
    if actual is None:
        return False
    if (m.get("type") or "Exact") == "RegularExpression":
        return re.fullmatch(str(m.get("value", "")), actual) is not None
    return actual == str(m.get("value", ""))


@dataclass(frozen=True)
class Request:
    """What HTTPRoute matching reads from a request."""

    method: str
    path: str  # the target, query included
    headers: dict[str, str]  # lower-case names

    @property
    def bare_path(self) -> str:
        return self.path.split("?", 1)[0]

    def query(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.path.partition("?")[2].split("&"):
            if part:
                k, _, v = part.partition("=")
                out.setdefault(k, v)  # the first value counts, as Envoy's query matcher
        return out


def match(m: dict[str, Any], req: Request) -> bool:
    path = m.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = path.get("type") or "PathPrefix", str(path.get("value", "/"))
    ok_path = {"Exact": lambda: req.bare_path == value,
               "PathPrefix": lambda: _prefix_match(value, req.bare_path),
               "RegularExpression": lambda: re.fullmatch(value, req.bare_path) is not None}
    if not ok_path.get(kind, lambda: False)():
        return False
    if m.get("method") and m["method"] != req.method:
        return False
    for h in m.get("headers") or []:
        if not _value_match(h, req.headers.get(str(h.get("name", "")).lower())):
            return False
    query = req.query()
    return all(_value_match(q, query.get(str(q.get("name", "")))) for q in m.get("queryParams") or [])


def _rank(m: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """Bigger is more specific (the spec's precedence, plus netlab's place for regex)."""
    path = m.get("path") or {"type": "PathPrefix", "value": "/"}
    kind = path.get("type") or "PathPrefix"
    tier = {"Exact": 2, "RegularExpression": 1}.get(kind, 0)
    length = len(str(path.get("value", "/")).rstrip("/")) if kind == "PathPrefix" else 0
    return (tier, length, 1 if m.get("method") else 0, len(m.get("headers") or []),
            len(m.get("queryParams") or []))


def route_name(route: HttpRoute, rule: int) -> str:
    return f"{route.namespace}.{route.name}.{rule}"


def choose(routes: Sequence[HttpRoute], ns: str, name: str, port: int, req: Request,
           rng: Callable[[], float] = random.random) -> Route:
    """The route for `req` to Service `ns/name:port`, and the backend picked for it."""
    mine = attached(routes, ns, name, port)
    if not mine:
        return Route(DEFAULT_ROUTE, Backend(ns, name, port))
    best: tuple[tuple[int, ...], str, int, HttpRoute, dict[str, Any]] | None = None
    for route in sorted(mine, key=lambda r: f"{r.namespace}/{r.name}"):
        for i, rule in enumerate((route.spec or {}).get("rules") or []):
            for m in rule.get("matches") or [{}]:
                if not match(m, req):
                    continue
                rank = _rank(m)
                if best is None or rank > best[0]:
                    best = (rank, f"{route.namespace}/{route.name}", i, route, rule)
    if best is None:
        return Route("", None, 404)
    _, _, i, route, rule = best
    ignored = tuple(str(f.get("type")) for f in rule.get("filters") or [])
    ignored += tuple(str(f.get("type")) for b in rule.get("backendRefs") or [] for f in b.get("filters") or [])
    backend = pick_backend(rule.get("backendRefs") or [], route.namespace, port, rng)
    if backend is None:
        return Route(route_name(route, i), None, 500, ignored)
    return Route(route_name(route, i), backend, 0, ignored)


def pick_backend(refs: list[dict[str, Any]], ns: str, default_port: int,
                 rng: Callable[[], float] = random.random) -> Backend | None:
    """One backendRef by weight; None when none can take traffic."""
    usable = [(int(r.get("weight", 1)), r) for r in refs
              if (r.get("kind") or "Service") == "Service" and (r.get("group") or "") in ("", "core")]
    usable = [(w, r) for w, r in usable if w > 0]
    total = sum(w for w, _ in usable)
    if total <= 0:
        return None
    x = rng() * total
    for w, r in usable:
        if x < w:
            return Backend(r.get("namespace") or ns, str(r["name"]), int(r.get("port") or default_port))
        x -= w
    w, r = usable[-1]
    return Backend(r.get("namespace") or ns, str(r["name"]), int(r.get("port") or default_port))
