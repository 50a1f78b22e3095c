"""Finding events by example: partial, nested, dotted, predicate, ordered; and what it says."""

from __future__ import annotations

from netlab.observe.events import Event
from netlab.observe.witness.match import (describe_partial, events_present, field_in,
                                          find_events, matches)

SYN = {"source": "bpf", "kind": "rx", "netns": "pod", "ifname": "lo", "proto": "tcp",
       "saddr": "10.0.0.2", "sport": 5555, "daddr": "127.0.0.1", "dport": 39080,
       "tcp_flags": "S", "seq": 100}
CT = {"source": "conntrack", "kind": "ct_new", "netns": "pod", "proto": "tcp",
      "saddr": "10.0.0.2", "sport": 5555, "daddr": "10.0.0.9", "dport": 9080,
      "extra": {"reply": {"saddr": "127.0.0.1", "sport": 39080}, "status": ["DST_NAT"]}}
DROP = {"source": "bpf", "kind": "drop", "netns": "pod", "dport": 39080, "reason": "NO_SOCKET"}


def test_only_the_given_keys_matter() -> None:
    assert find_events([SYN, CT, DROP], {"kind": "drop", "dport": 39080}) == [DROP]
    assert find_events([SYN, CT, DROP], {"dport": 39080}) == [SYN, DROP]
    assert find_events([SYN, CT], {"kind": "drop"}) == []
    assert not matches(SYN, {"reason": "NO_SOCKET"})  # a missing key never matches


def test_nested_and_dotted_keys() -> None:
    assert find_events([SYN, CT], {"extra": {"reply": {"sport": 39080}}}) == [CT]
    assert find_events([SYN, CT], {"extra.reply.saddr": "127.0.0.1"}) == [CT]
    assert find_events([CT], {"extra": {"reply": {"sport": 9080}}}) == []
    assert find_events([SYN], {"extra": {"reply": {}}}) == []  # SYN has no extra at all


def test_predicates_and_event_objects() -> None:
    ev = Event(ts_ns=1, source="bpf", kind="tx", netns_inode=7, sport=9080, tcp_flags="SA",
               extra={"len": 60})
    assert matches(ev, {"sport": field_in(9080, 39080), "extra": {"len": lambda n: n > 40}})
    assert not matches(ev, {"sport": field_in(1, 2)})
    assert not matches(ev, {"sport": lambda p: p.nope})  # a predicate that raises: no match
    assert "sport=9080|39080" in describe_partial({"sport": field_in(9080, 39080)})


def test_present_in_any_order_and_in_order() -> None:
    events = [CT, SYN, DROP]
    assert events_present(events, [{"kind": "drop"}, {"kind": "rx"}]).ok
    m = events_present(events, [{"kind": "drop"}, {"kind": "rx"}], ordered=True)
    assert not m.ok and m.missing == [{"kind": "rx"}]
    m = events_present(events, [{"kind": "ct_new"}, {"kind": "rx"}, {"kind": "drop"}],
                       ordered=True)
    assert m.ok and m.matched == [CT, SYN, DROP]


def test_seen_names_what_matched_and_the_nearest_miss() -> None:
    m = events_present([SYN, CT], [{"kind": "rx", "dport": 39080},
                                   {"kind": "rx", "dport": 39080, "tcp_flags": "SA"}])
    text = m.seen()
    assert text.startswith("1 of 2 expected events seen")
    assert "✔ {kind=rx, dport=39080}: [pod] bpf rx lo tcp 10.0.0.2:5555 → 127.0.0.1:39080 S" in text
    assert "✘ {kind=rx, dport=39080, tcp_flags=SA}: none; nearest [pod] bpf rx lo" in text
    assert "differs in tcp_flags" in text
    # Nothing in common: no "nearest" that would mislead.
    assert "nearest" not in events_present([SYN], [{"kind": "drop"}]).seen()
    assert "no event at all" in events_present([], [{"kind": "drop"}]).seen()
