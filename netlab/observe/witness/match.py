"""Find events by example: give the fields you care about, get the events that have them.

Like Retis' `assert_events_present`: an expected event is a *partial* event, a dict of
only the fields that matter (`{"kind": "drop", "dport": 39080}`). Nested dicts match
nested fields (`{"extra": {"reply": {"sport": 39080}}}`, or the dotted key
`"extra.reply.sport"`), and a callable value is a predicate (`{"dport": lambda p: p >
1024}`). Everything else about the event is ignored, so an expectation survives new
fields and says exactly what it depends on.

Each answer comes with a readable "seen" text, because a lab prints "expected …, saw …":
for an expected event that is missing, the nearest event is shown with the fields that
differed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

Partial = Mapping[str, Any]
_MISSING = object()


def as_dict(event: Any) -> Mapping[str, Any]:
    """An event as a mapping: dicts as they are, dataclasses (observe.Event) by field."""
    if isinstance(event, Mapping):
        return event
    if is_dataclass(event) and not isinstance(event, type):
        return asdict(event)
    raise TypeError(f"not an event: {event!r}")


def _get(event: Mapping[str, Any], key: str) -> Any:
    cur: Any = event
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _differences(event: Mapping[str, Any], partial: Partial, prefix: str = "") -> list[str]:
    """The expected keys `event` does not satisfy, as dotted names."""
    out = []
    for key, want in partial.items():
        name = f"{prefix}{key}"
        have = _get(event, key)
        if isinstance(want, Mapping):
            if not isinstance(have, Mapping):
                out.append(name)
            else:
                out += _differences(have, want, name + ".")
        elif have is _MISSING:
            out.append(name)
        elif callable(want):
            try:
                ok = bool(want(have))
            except Exception:  # noqa: BLE001 - a predicate that cannot judge does not match
                ok = False
            if not ok:
                out.append(name)
        elif have != want:
            out.append(name)
    return out


def _leaves(partial: Partial) -> int:
    return sum(_leaves(v) if isinstance(v, Mapping) else 1 for v in partial.values())


def matches(event: Any, partial: Partial) -> bool:
    """Does `event` carry every field of `partial` (nested, dotted or predicate)?"""
    return not _differences(as_dict(event), partial)


def find_events(events: Iterable[Any], partial: Partial) -> list[Any]:
    """The events that match `partial`, in their order."""
    return [e for e in events if matches(e, partial)]


def describe_partial(partial: Partial) -> str:
    """`{kind=drop, extra.reply.sport=39080}`: an expected event in one line."""
    def flat(p: Partial, prefix: str = "") -> list[str]:
        items = []
        for k, v in p.items():
            if isinstance(v, Mapping):
                items += flat(v, f"{prefix}{k}.")
            else:
                shown = getattr(v, "__doc__", None) if callable(v) else None
                items.append(f"{prefix}{k}={shown or ('<predicate>' if callable(v) else v)}")
        return items
    return "{" + ", ".join(flat(partial)) + "}"


def describe(event: Any) -> str:
    """One line for a packet, conntrack or drop event: where, what, which tuple."""
    e = as_dict(event)
    where = f"[{e.get('netns') or e.get('netns_inode', '?')}]"
    head = " ".join(str(x) for x in (e.get("source"), e.get("kind"), e.get("ifname"))
                    if x)
    tup = (f"{e.get('proto') or ''} {e.get('saddr')}:{e.get('sport')} → "
           f"{e.get('daddr')}:{e.get('dport')}").strip()
    tail = []
    if e.get("tcp_flags"):
        tail.append(e["tcp_flags"])
    reply = (e.get("extra") or {}).get("reply")
    if reply:
        tail.append(f"reply {reply.get('saddr')}:{reply.get('sport')} → "
                    f"{reply.get('daddr')}:{reply.get('dport')}")
    if e.get("reason"):
        tail.append(f"reason {e['reason']}")
    return " ".join([where, head, tup, *tail])


@dataclass
class Found:
    """One expected event and what it matched."""

    expected: Partial
    events: list[Any] = field(default_factory=list)
    nearest: Any = None  # when nothing matched: the event that matched most fields
    differed: list[str] = field(default_factory=list)  # ... and the fields it got wrong

    @property
    def ok(self) -> bool:
        return bool(self.events)

    def seen(self) -> str:
        want = describe_partial(self.expected)
        if self.events:
            more = f" (+{len(self.events) - 1} more)" if len(self.events) > 1 else ""
            return f"✔ {want}: {describe(self.events[0])}{more}"
        if self.nearest is None:
            return f"✘ {want}: no event at all"
        return (f"✘ {want}: none; nearest {describe(self.nearest)} "
                f"(differs in {', '.join(self.differed)})")


@dataclass
class Match:
    """The answer of `events_present`: did every expected event occur, and what was seen."""

    found: list[Found]
    ordered: bool = False

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.found)

    @property
    def matched(self) -> list[Any]:
        """The first matching event of each expected event (those that matched)."""
        return [f.events[0] for f in self.found if f.events]

    @property
    def missing(self) -> list[Partial]:
        return [f.expected for f in self.found if not f.ok]

    def seen(self) -> str:
        order = " in this order" if self.ordered else ""
        lines = [f"{sum(f.ok for f in self.found)} of {len(self.found)} expected events "
                 f"seen{order}"]
        return "; ".join(lines + [f.seen() for f in self.found])

    def __bool__(self) -> bool:
        return self.ok


def _nearest(events: Sequence[Any], partial: Partial) -> tuple[Any, list[str]]:
    best, best_diff = None, []
    for e in events:
        diff = _differences(as_dict(e), partial)
        if best is None or len(diff) < len(best_diff):
            best, best_diff = e, diff
    if best is not None and len(best_diff) >= _leaves(partial):
        return None, []  # nothing in common: naming an arbitrary event would mislead
    return best, best_diff


def events_present(events: Iterable[Any], expected: Sequence[Partial],
                   ordered: bool = False) -> Match:
    """Is each expected (partial) event in `events`? With `ordered`, each must come after
    the previous one's first match, as a sequence of steps; without, in any order."""
    evs = list(events)
    found = []
    start = 0
    for partial in expected:
        pool = evs[start:] if ordered else evs
        hits = find_events(pool, partial)
        if hits:
            if ordered:
                start += pool.index(hits[0]) + 1
            found.append(Found(partial, hits))
        else:
            nearest, differed = _nearest(pool, partial)
            found.append(Found(partial, [], nearest, differed))
    return Match(found, ordered)


def field_in(*values: Any) -> Callable[[Any], bool]:
    """A predicate for a partial event: the field is one of `values`."""
    def check(v: Any) -> bool:
        return v in values
    check.__doc__ = "|".join(str(v) for v in values)
    return check
