"""What a lab is made of, and the judging of evidence. Pure: no kernel, no root.

A lab is a folder: a topology, variants (each a named change to the model with the
outcome it must show), traffic that drives real clients on the built instance and
returns evidence, expectations over that evidence, the explain text and the lab's own
report sections. The framework knows no lab: words like "stealing" or "mTLS" live in
the lab's outcomes and expectations, never here.

Evidence is a plain JSON-able dict of what was *observed* (a client's exit code and
output, kernel events, iptables-save, sysctls read back). An expectation is a small
predicate over it that also says what it saw, so a failure prints "expected X, saw Y".
A variant is *as expected* when every expectation held: then the observed outcome is
the declared one, otherwise it is "not as expected" and says what differed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from netlab import model, topology

if TYPE_CHECKING:
    from netlab.labs.context import Context
    from netlab.labs.sections import Section

Evidence = dict[str, Any]
Check = Callable[[Evidence], tuple[bool, str]]  # -> (held, what was seen)
Change = Callable[[model.Lab], model.Lab]  # a variant's change to the lab's model
Traffic = Callable[["Context"], Evidence]
Sections = Callable[["VariantResult"], Sequence["Section"]]

# Outcome words whose meaning for the user needs no saying; any other word must say.
GOOD_FOR_USER = {"works": True, "fixed": True, "reproduced": False, "broken": False}
NOT_AS_EXPECTED = "not as expected"


@dataclass(frozen=True)
class Outcome:
    """What a variant shows, in the lab's words: `Outcome("reproduced", "the SYN dies at
    the listener")`. `good` says whether the user is better off with it: the report
    colours an outcome by that, never by whether the variant went as expected."""

    word: str
    meaning: str
    good: bool | None = None  # None: looked up in GOOD_FOR_USER

    def __post_init__(self) -> None:
        if self.good is None:
            if self.word not in GOOD_FOR_USER:
                raise ValueError(f"outcome {self.word!r}: say whether it is good for the user "
                                 f"(good=True/False); known words: {', '.join(GOOD_FOR_USER)}")
            object.__setattr__(self, "good", GOOD_FOR_USER[self.word])

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "meaning": self.meaning, "good": self.good}


@dataclass(frozen=True)
class Expectation:
    id: str
    expected: str  # in words: what must be observed
    check: Check
    evidence_keys: tuple[str, ...] = ()  # where in the evidence the proof sits


def expect(id: str, expected: str, check: Check, *evidence_keys: str) -> Expectation:
    """`expect("stolen", "the client gets the agent's answer", check, "client")`."""
    return Expectation(id, expected, check, evidence_keys)


def unchanged(lab: model.Lab) -> model.Lab:
    """The change of a variant that runs the topology as the file has it."""
    return lab


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    outcome: Outcome  # what the evidence must show
    expectations: tuple[Expectation, ...]
    change: Change = unchanged
    params: Mapping[str, Any] = field(default_factory=dict)  # read by the lab's traffic
    # Variants with the same non-empty key are judged on ONE built instance and one run
    # of the traffic. For variants that differ in how the same evidence is read
    # (Kiali 1.89 and Kiali 2.0 asking the same Prometheus), or for the steps of one
    # walk-through that each keep to their own clients, capture windows and series, so
    # that none reads another's traces (ambient-tour, its traffic.py says how). They must
    # have the same change and params (`Lab` checks), and the traffic gathers the
    # evidence every one of them is judged on.
    shares_instance: str = ""


def no_sections(result: "VariantResult") -> Sequence["Section"]:
    return ()


@dataclass(frozen=True)
class Lab:
    name: str
    title: str
    folder: Path  # holds topology.yaml and explain.md
    variants: tuple[Variant, ...]
    traffic: Traffic  # runs on each variant's built instance, returns evidence
    sections: Sections = no_sections  # the lab's own report sections, from a result
    # What the traffic will need that is slow to load (a compiled BPF program, scapy):
    # the runner calls it in a thread while the first instance builds. Only a cache
    # warmer: the traffic must work the same without it.
    warm: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        first: dict[str, Variant] = {}
        for v in self.variants:
            if not v.shares_instance:
                continue
            other = first.setdefault(v.shares_instance, v)
            if other.change is not v.change or dict(other.params) != dict(v.params):
                raise ValueError(f"lab {self.name}: variants {other.name} and {v.name} share instance "
                                 f"{v.shares_instance!r} but differ in their change or params; "
                                 "only variants that read the same run may share one")

    def sharing(self, names: Sequence[str]) -> list[list[str]]:
        """`names` in groups run on one instance each, in order of first appearance: a
        variant alone, or every named variant with its `shares_instance` key."""
        groups: list[list[str]] = []
        by_key: dict[str, list[str]] = {}
        for n in names:
            key = self.variant(n).shares_instance
            if key and key in by_key:
                by_key[key].append(n)
                continue
            groups.append([n])
            if key:
                by_key[key] = groups[-1]
        return groups

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def topology(self) -> model.Lab:
        """The lab's model as its topology.yaml says (parsed and validated each call)."""
        return topology.load([self.folder / "topology.yaml"])

    def model(self, variant: Variant, base: model.Lab | None = None) -> model.Lab:
        """The model `variant` builds: its change applied to the (given or loaded) base."""
        return variant.change(base if base is not None else self.topology())

    def explain(self) -> str:
        return (self.folder / "explain.md").read_text()


@dataclass
class Verdict:
    id: str
    expected: str
    held: bool
    seen: str
    evidence_keys: list[str]


@dataclass(frozen=True)
class Observed:
    """The outcome the evidence showed: the expected one, or "not as expected" and why."""

    word: str
    meaning: str
    good: bool | None  # None when not as expected: the evidence does not say
    as_expected: bool

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "meaning": self.meaning, "good": self.good,
                "as_expected": self.as_expected}


def observe(expected: Outcome, verdicts: Sequence[Verdict], error: str | None) -> Observed:
    """Matching: the expected outcome is observed only when every expectation held."""
    if error is None and verdicts and all(v.held for v in verdicts):
        return Observed(expected.word, expected.meaning, expected.good, True)
    if error is not None:
        why = f"the variant did not run to the end: {error.splitlines()[0] if error else ''}"
    elif not verdicts:
        why = "no expectation to judge it by"
    else:
        why = "; ".join(f"{v.id}: expected {v.expected}, saw {v.seen}"
                        for v in verdicts if not v.held)
    return Observed(NOT_AS_EXPECTED, why, None, False)


@dataclass
class VariantResult:
    lab: str
    variant: str
    summary: str
    expected: Outcome
    instance: str
    seconds: float
    verdicts: list[Verdict]
    evidence: Evidence
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # build, traffic, teardown
    shared_with: list[str] = field(default_factory=list)  # variants judged on the same instance

    @cached_property
    def observed(self) -> Observed:
        return observe(self.expected, self.verdicts, self.error)

    @property
    def ok(self) -> bool:
        """As expected: the evidence showed the outcome this variant must show."""
        return self.observed.as_expected

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "variant": self.variant, "summary": self.summary,
                "ok": self.ok, "expected": self.expected.to_dict(),
                "observed": self.observed.to_dict(), "instance": self.instance,
                "seconds": self.seconds, "timings": self.timings,
                "verdicts": [vars(v) for v in self.verdicts], "evidence": self.evidence,
                "error": self.error, "shared_with": self.shared_with}


def evaluate(variant: Variant, evidence: Evidence) -> list[Verdict]:
    """Judge every expectation; a check that crashes is a failed verdict, not a crash."""
    out = []
    for e in variant.expectations:
        try:
            held, seen = e.check(evidence)
        except Exception as exc:  # noqa: BLE001 - missing evidence must fail, visibly
            held, seen = False, f"could not evaluate: {type(exc).__name__}: {exc}"
        out.append(Verdict(e.id, e.expected, bool(held), seen, list(e.evidence_keys)))
    return out


def dig(evidence: Evidence, dotted: str, default: Any = None) -> Any:
    """evidence["a"]["b"] as dig(ev, "a.b"), with a default when any step is missing."""
    cur: Any = evidence
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur
