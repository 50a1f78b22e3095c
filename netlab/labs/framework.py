"""The data a lab is made of, and the judging of evidence. Pure: no kernel, no root.

Evidence is a plain JSON-able dict a scenario fills with what it *observed* (the
client's exit code and output, kernel events, iptables-save, sysctls read back).
Expectations are small predicates over it that also say what they saw, so a failed
one prints "expected X, saw Y" instead of a bare False, and the JSON report carries
the evidence that backs every verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

Evidence = dict[str, Any]
Check = Callable[[Evidence], tuple[bool, str]]  # -> (held, what was seen)
Scenario = Callable[["Variant", str, Callable[[str], None]], Evidence]


@dataclass(frozen=True)
class Expectation:
    id: str
    expected: str  # in words: what must be observed
    check: Check
    evidence_keys: tuple[str, ...] = ()  # where in the evidence the proof sits


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    expectations: tuple[Expectation, ...]
    params: dict[str, Any] = field(default_factory=dict)
    works: bool = True  # does the user's goal (here: stealing) succeed in this variant?


@dataclass(frozen=True)
class Lab:
    name: str
    title: str
    explain_path: Path
    variants: tuple[Variant, ...]
    scenario: Scenario  # runs one variant on a lab instance named by the runner

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def explain(self) -> str:
        return self.explain_path.read_text()


@dataclass
class Verdict:
    id: str
    expected: str
    held: bool
    seen: str
    evidence_keys: list[str]


@dataclass
class VariantResult:
    lab: str
    variant: str
    summary: str
    works: bool
    instance: str
    seconds: float
    verdicts: list[Verdict]
    evidence: Evidence
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.verdicts) and all(v.held for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


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
