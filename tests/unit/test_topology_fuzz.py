"""Property: no topology, however malformed, gets past the loader as anything but a TopologyError.

Real example files are mutated in the ways a hostile or careless user would: typo'd
enums and fields, wrong types, control characters, tags, deep nesting, alias bombs,
special address ranges, proxy ports, NUL bytes, port clashes, exhausted ranges. Each
mutation in INVALID must be refused with netlab's own located error; the free-form
mutations may load or be refused, but nothing else may happen, the planner included,
and nothing may take a second.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from netlab.errors import TopologyError
from netlab.mesh import PROXY_PORTS
from netlab.plan.planner import PlanOptions, plan
from netlab.topology import load

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(REPO.glob("topologies/*.yaml")) + sorted(REPO.glob("netlab/labs/*/topology.yaml"))
BASES = [[d for d in yaml.safe_load_all(p.read_text()) if d] for p in EXAMPLES]
# Deterministic by default so CI is stable; NETLAB_FUZZ_RANDOM=1 explores new cases.
DERANDOMIZE = os.environ.get("NETLAB_FUZZ_RANDOM") != "1"
INVALID_EXAMPLES = 800
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
FREE_EXAMPLES = 400


@dataclass
class Case:
    kind: str
    text: str


Docs = list[dict[str, Any]]


def dump(docs: Docs) -> str:
    return yaml.dump_all(docs, Dumper=DUMPER, sort_keys=False, allow_unicode=True)


def of_kind(docs: Docs, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def containers(docs: Docs) -> list[dict[str, Any]]:
    return [c for d in of_kind(docs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]]


def lab(docs: Docs) -> dict[str, Any]:
    return of_kind(docs, "Lab")[0]


def typo(draw: Any, word: str, valid: list[str]) -> str:
    """A near miss of `word` that is none of `valid`."""
    how = draw(st.sampled_from(["lower", "title", "drop", "swap", "extra"]))
    if how == "lower":
        out = word.lower()
    elif how == "title":
        out = word.title() if word.lower() != word else word.upper()
    elif how == "drop":
        i = draw(st.integers(0, len(word) - 1))
        out = word[:i] + word[i + 1:]
    elif how == "swap" and len(word) > 1:
        i = draw(st.integers(0, len(word) - 2))
        out = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    else:
        out = word + draw(st.sampled_from(["x", "s", "_", "K"]))
    return out if out not in valid and out else word + "x"


def peer_authentication(spec: Any, name: str = "fuzz") -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


# --- mutations that must be refused ------------------------------------------------------


def m_enum(draw: Any, docs: Docs) -> str:
    modes = ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
    bad = typo(draw, draw(st.sampled_from(modes)), modes)
    where = draw(st.sampled_from(["mtls", "port"]))
    spec: dict[str, Any] = {"mtls": {"mode": bad}} if where == "mtls" else \
        {"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {draw(st.integers(1, 65535)): {"mode": bad}}}
    return dump(docs + [peer_authentication(spec)])


def m_policy_shape(draw: Any, docs: Docs) -> str:
    spec = draw(st.sampled_from([
        {"mtls": "STRICT"}, {"selector": "oops"}, {"mtls": {"mdoe": "STRICT"}}, {"mtls": ["STRICT"]},
        {"selector": {"matchLabels": "app"}}, {"portLevelMtls": {}},
    ]))
    if draw(st.booleans()):
        return dump(docs + [peer_authentication(spec)])
    ap = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
          "metadata": {"name": "fuzz"}, "spec": draw(st.sampled_from([
              {"rules": [{"to": [{"operation": {"ports": 9080}}]}]}, {"action": "allow"},
              {"rules": "all"}, {"rules": [{"form": []}]}, {"selector": "oops"},
              {"rules": [{"to": [{"operation": {"ports": [9080]}}]}]}]))}
    return dump(docs + [ap])


# Known fields per kind, by where they sit; renaming one to a near miss must be refused.
KNOWN_FIELDS: list[tuple[str, Callable[[Docs], list[dict[str, Any]]], list[str]]] = [
    ("Lab", lambda d: [lab(d)["spec"]], ["nodes"]),
    ("Lab", lambda d: [lab(d)["spec"].setdefault("network", {"podCIDR": "10.244.0.0/16"})], ["podCIDR"]),
    ("Deployment", lambda d: [x["spec"] for x in of_kind(d, "Deployment")], ["selector", "template"]),
    ("Deployment", containers, ["name", "image"]),
    ("Service", lambda d: [x["spec"] for x in of_kind(d, "Service")], ["ports", "selector"]),
    ("any", lambda d: d[1:], ["metadata", "kind", "apiVersion"]),
]


def m_field_typo(draw: Any, docs: Docs) -> str:
    options = [(f, k) for f, keys in ((f, keys) for _, f, keys in KNOWN_FIELDS) for k in keys if any(
        k in m for m in f(docs))]
    finder, key = draw(st.sampled_from(options))
    target = draw(st.sampled_from([m for m in finder(docs) if key in m]))
    new = typo(draw, key, list(target))
    target[new] = target.pop(key)
    return dump(docs)


def m_wrong_type(draw: Any, docs: Docs) -> str:
    choice = draw(st.sampled_from(["replicas", "containerPort", "image", "name", "podCIDR", "port", "labels"]))
    bad = draw(st.sampled_from([[1], {"a": 1}, "abc", True, 1.5]))
    if choice == "replicas":
        of_kind(docs, "Deployment")[0]["spec"]["replicas"] = bad if bad != 1.5 else "two"
    elif choice == "containerPort":
        containers(docs)[0]["ports"] = [{"containerPort": bad}]
    elif choice == "image":
        containers(docs)[0]["image"] = bad if bad != "abc" else 7
    elif choice == "name":
        docs[-1]["metadata"]["name"] = bad if bad != "abc" else 5
    elif choice == "podCIDR":
        lab(docs)["spec"]["network"] = {"podCIDR": bad if bad != "abc" else 10}
    elif choice == "port":
        services = of_kind(docs, "Service")
        if not services:
            return dump(docs) + "---\n" + "kind: [\n"  # no Service: a syntax error instead
        services[0]["spec"]["ports"][0]["port"] = bad if bad != 1.5 else "80"
    else:
        docs[-1]["metadata"]["labels"] = {"a": bad if bad != "abc" else 1}
    return dump(docs)


CONTROL = [chr(c) for c in [*range(0, 9), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x80, 0x9F]]


def m_control(draw: Any, docs: Docs) -> str:
    text = dump(docs)
    i = draw(st.integers(0, len(text)))
    return text[:i] + draw(st.sampled_from(CONTROL)) + text[i:]


def m_tag(draw: Any, docs: Docs) -> str:
    tag = draw(st.sampled_from(["!!int abc", "!!float nope", "!!binary AAAA", "!custom v", "!!set {a}",
                                "!!omap [a: 1]", "!!timestamp x", "!!bool maybe", "!!null x",
                                "!!python/name:os.system", ".nan", "-.inf"]))
    text = dump(docs)
    anchor = "kind: Lab\n"
    return text.replace(anchor, anchor + f"status: {tag}\n", 1)


def m_nesting(draw: Any, docs: Docs) -> str:
    depth = draw(st.integers(65, 5000))
    style = draw(st.booleans())
    deep = "[" * depth + "]" * depth if style else "{a: " * depth + "1" + "}" * depth
    return dump(docs) + f"---\nstatus: {deep}\n"


def m_alias_bomb(draw: Any, docs: Docs) -> str:
    levels, width = draw(st.integers(6, 9)), draw(st.integers(8, 10))
    lines = [f"  l0: &l0 [{','.join(['lol'] * width)}]"]
    lines += [f"  l{i}: &l{i} [{','.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    where = draw(st.sampled_from(["spec", "status"]))
    return dump(docs) + (f"---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
                         f"metadata: {{name: bomb}}\n{where}:\n" + "\n".join(lines) + "\n")


SPECIAL = ["172.18.0.0/16", "172.18.4.0/24", "172.16.0.0/12", "127.0.0.0/16", "127.1.0.0/24",
           "169.254.0.0/16", "224.0.0.0/16", "239.1.0.0/24", "0.0.0.0/16", "0.1.0.0/24", "240.0.0.0/16",
           "255.255.0.0/16"]


def m_cidr(draw: Any, docs: Docs) -> str:
    field = draw(st.sampled_from(["podCIDR", "serviceCIDR"]))
    network = lab(docs)["spec"].setdefault("network", {})
    network[field] = draw(st.sampled_from(SPECIAL))
    return dump(docs)


def m_proxy_port(draw: Any, docs: Docs) -> str:
    port = draw(st.sampled_from(sorted(PROXY_PORTS)))
    services = of_kind(docs, "Service")
    if services and draw(st.booleans()):
        services[0]["spec"]["ports"][0]["targetPort"] = port
    else:
        containers(docs)[0]["ports"] = [{"containerPort": port}]
    return dump(docs)


def m_nul(draw: Any, docs: Docs) -> str:
    c = containers(docs)[0]
    where = draw(st.sampled_from(["command", "args", "env"]))
    if where == "env":
        c["env"] = [{"name": "A", "value": "x\0y"}]
    else:
        c.setdefault("command", ["/bin/sh"])
        c[where] = [*c.get(where, []), "a\0b"]
    return dump(docs)


def m_port_clash(draw: Any, docs: Docs) -> str:
    deployment = of_kind(docs, "Deployment")[0]
    first = deployment["spec"]["template"]["spec"]["containers"][0]
    port = draw(st.integers(1, 14999))
    first["ports"] = [{"containerPort": port}]
    second = {"name": "clash", "image": "netlab/tcp-echo", "ports": [{"containerPort": port}]}
    deployment["spec"]["template"]["spec"]["containers"].append(second)
    return dump(docs)


def m_env_name(draw: Any, docs: Docs) -> str:
    name = draw(st.sampled_from(["1A", "A=B", "A B", "", "é", "A\tB", "9"]))
    containers(docs)[0]["env"] = [{"name": name, "value": "v"}]
    return dump(docs)


def m_exhaust(draw: Any, docs: Docs) -> str:
    lab(docs)["spec"].setdefault("network", {})["serviceCIDR"] = "10.96.0.0/24"
    lab(docs)["spec"]["network"].setdefault("podCIDR", "10.244.0.0/16")
    count = draw(st.integers(253, 270))
    services = [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"fz{i}"},
                 "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}} for i in range(count)]
    return dump(docs + services)


def m_program(draw: Any, docs: Docs) -> str:
    containers(docs)[0]["command"] = [draw(st.sampled_from(["/nonexistent/app", "/etc", "/proc/version", ""]))]
    return dump(docs)


def m_duplicate_key(draw: Any, docs: Docs) -> str:
    text = dump(docs)
    return text.replace("kind: Lab\n", "kind: Lab\nkind: Lab\n", 1)


def m_replicas(draw: Any, docs: Docs) -> str:
    of_kind(docs, "Deployment")[0]["spec"]["replicas"] = draw(st.sampled_from([-1, 65, 10**12]))
    return dump(docs)


INVALID: dict[str, Callable[[Any, Docs], str]] = {
    "enum": m_enum, "policy shape": m_policy_shape, "field typo": m_field_typo, "wrong type": m_wrong_type,
    "control char": m_control, "tag": m_tag, "nesting": m_nesting, "alias bomb": m_alias_bomb,
    "special cidr": m_cidr, "proxy port": m_proxy_port, "nul": m_nul, "port clash": m_port_clash,
    "env name": m_env_name, "service exhaustion": m_exhaust, "program": m_program,
    "duplicate key": m_duplicate_key, "replicas": m_replicas,
}


# Service exhaustion needs 253+ documents, so it is drawn a third as often as the rest.
WEIGHTED = [k for k in sorted(INVALID) if k != "service exhaustion"] * 3 + ["service exhaustion"]


@st.composite
def invalid_cases(draw: Any) -> Case:
    docs = copy.deepcopy(draw(st.sampled_from(BASES)))
    kind = draw(st.sampled_from(WEIGHTED))
    return Case(kind, INVALID[kind](draw, docs))


# --- free-form mutations: may load, may be refused, nothing else ---------------------------


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=3), max_leaves=6)


def paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here] if here else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, here + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, here + (i,))
    return out


@st.composite
def free_cases(draw: Any) -> Case:
    docs = copy.deepcopy(draw(st.sampled_from(BASES)))
    how = draw(st.sampled_from(["delete", "retype", "text", "names"]))
    if how == "names":  # namespaces and deployments whose names share '-' (netns collisions)
        ns_a, ns_b = draw(st.sampled_from([("fz-a", "fz"), ("a-b", "a"), ("x", "x-y")]))
        for ns, dep in ((ns_a, "b"), (ns_b, ns_a.split("-", 1)[-1] + "-b")):
            docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": dep, "namespace": ns},
                         "spec": {"selector": {"matchLabels": {"app": dep}}, "template": {
                             "metadata": {"labels": {"app": dep}},
                             "spec": {"containers": [{"name": "c", "image": "netlab/sleep"}]}}}})
        return Case(how, dump(docs))
    if how == "text":
        text = dump(docs)
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 20)))
        return Case(how, text[:i] + draw(st.text(alphabet=":-[]{}&*!|>'\"# \n\tab1.", max_size=6)) + text[j:])
    index = draw(st.integers(0, len(docs) - 1))
    options = paths(docs[index])
    if not options:
        return Case(how, dump(docs))
    path = draw(st.sampled_from(options))
    parent = docs[index]
    for part in path[:-1]:
        parent = parent[part]
    if how == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON_VALUES)
    return Case(how, dump(docs))


# --- the properties ------------------------------------------------------------------------


def attempt(tmp: Path, case: Case) -> tuple[TopologyError | None, float]:
    """Load and, if accepted, plan; anything but a TopologyError propagates and fails the test."""
    path = tmp / "fuzz.yaml"
    path.write_text(case.text, encoding="utf-8", errors="surrogatepass")
    started = time.process_time()  # CPU time: other tests sharing the machine do not count
    try:
        lab_model = load([str(path)])
        state = plan(lab_model, PlanOptions())
        names = [n.name for n in state.netns]
        assert len(names) == len(set(names)), f"two netns share a name: {case.kind}"
    except TopologyError as e:
        assert e.file == str(path) or e.file.startswith(str(path)), e
        return e, time.process_time() - started
    return None, time.process_time() - started


# No explain phase: it traces every line, which would make the timing meaningless.
SETTINGS = dict(deadline=None, database=None, derandomize=DERANDOMIZE,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def test_every_invalid_topology_is_refused_with_a_located_error(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=INVALID_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
    @given(case=invalid_cases())
    def run(case: Case) -> None:
        seen[case.kind] += 1
        error, elapsed = attempt(tmp_path, case)
        assert error is not None, f"accepted an invalid topology ({case.kind}):\n{case.text[:2000]}"
        assert elapsed < 1.0, f"{case.kind} took {elapsed:.2f} s"
        assert error.problem and error.fix

    run()
    print(f"invalid topologies tried: {sum(seen.values())}: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= INVALID_EXAMPLES * 0.9
    assert set(seen) == set(INVALID), f"classes never drawn: {set(INVALID) - set(seen)}"


def test_free_mutations_load_or_give_a_located_error(tmp_path: Path) -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=FREE_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
    @given(case=free_cases())
    def run(case: Case) -> None:
        seen[case.kind] += 1
        _, elapsed = attempt(tmp_path, case)
        assert elapsed < 1.0, f"{case.kind} took {elapsed:.2f} s"

    run()
    print(f"free mutations tried: {sum(seen.values())}: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= FREE_EXAMPLES * 0.9
    assert INVALID_EXAMPLES + FREE_EXAMPLES >= 1000


def test_the_examples_themselves_load() -> None:
    assert len(BASES) >= 3
    for example in EXAMPLES:
        load([str(example)])


def test_dump_keeps_the_examples_loadable(tmp_path: Path) -> None:
    """The mutations start from a YAML round trip; it must not change what the files mean."""
    for docs in BASES:
        path = tmp_path / "same.yaml"
        path.write_text(dump(copy.deepcopy(docs)))
        assert json.dumps(docs, sort_keys=True)
        load([str(path)])


@pytest.mark.parametrize("kind", sorted(INVALID))
def test_each_invalid_class_is_refused_on_every_example(tmp_path: Path, kind: str) -> None:
    """One fixed draw per class and example, so a class that stops being refused is named."""
    @settings(max_examples=len(BASES) * 2, **SETTINGS)  # type: ignore[arg-type]
    @given(base=st.sampled_from(BASES), data=st.data())
    def run(base: Docs, data: Any) -> None:
        case = Case(kind, INVALID[kind](data.draw, copy.deepcopy(base)))
        error, _ = attempt(tmp_path, case)
        assert error is not None, f"accepted ({kind}):\n{case.text[:2000]}"

    run()
