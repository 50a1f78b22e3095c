"""Istio and Gateway API kinds by their vendored CRDs; Kubernetes kinds by Kubernetes' schemas."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import yaml

from netlab.errors import TopologyError
from netlab.topology import crd, k8s_schema, load
from netlab.topology.loader import KINDS

LAB = "apiVersion: netlab.dev/v1alpha1\nkind: Lab\nmetadata: {name: t}\nspec: {nodes: [{name: node-1}]}\n"
CRD_DIR = Path(crd.CRD_DIR)


def doc(kind: str, spec: str, api: str = "security.istio.io/v1") -> str:
    return f"---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: x, namespace: default}}\nspec:\n{spec}"


def loaded(tmp_path: Path, *docs: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "lab.yaml"
    path.write_text(LAB + "".join(docs))
    return load([str(path)])


def refused(tmp_path: Path, *docs: str) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        loaded(tmp_path, *docs)
    return info.value


# --- the vendored files -------------------------------------------------------------


def test_vendored_crds_are_the_files_the_readme_names() -> None:
    readme = (CRD_DIR / "README.md").read_text()
    sums = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M))
    assert set(sums) == set(crd.CRD_FILES.values())
    for name, digest in sums.items():
        assert hashlib.sha256((CRD_DIR / name).read_bytes()).hexdigest() == digest, f"{name} was edited"
    assert "Apache" in readme and (CRD_DIR / "LICENSE-Apache-2.0.txt").is_file()


def test_accepted_api_versions_are_the_served_ones() -> None:
    for kind in crd.CRD_FILES:
        assert set(KINDS[kind][0]) == set(crd.served_versions(kind)), kind


def test_every_crd_pattern_compiles_in_python() -> None:
    """The API server's regexes are RE2; every one in the vendored CRDs must mean something to `re`."""
    def patterns(node: object) -> list[str]:
        if isinstance(node, dict):
            own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
            return own + [p for v in node.values() for p in patterns(v)]
        if isinstance(node, list):
            return [p for v in node for p in patterns(v)]
        return []

    found = []
    for file in set(crd.CRD_FILES.values()):
        for document in yaml.safe_load_all((CRD_DIR / file).read_text()):
            found += patterns(document)
    assert len(found) > 100
    for pattern in found:
        re.compile(pattern)


def test_structural_schema_closes_objects_but_not_logical_branches() -> None:
    schema = crd.to_json_schema({
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}},
                       "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                       "n": {"x-kubernetes-int-or-string": True}},
        "oneOf": [{"properties": {"a": {"type": "object", "properties": {}}}}],
    })
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["open"]
    assert schema["properties"]["n"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "additionalProperties" not in schema["oneOf"][0]["properties"]["a"]


# --- Istio ------------------------------------------------------------------------------


def test_typo_d_strict_is_refused_at_load_with_did_you_mean(tmp_path: Path) -> None:
    for typo in ("STRIKT", "strict", "Strict"):
        e = refused(tmp_path, doc("PeerAuthentication", f"  mtls: {{mode: {typo}}}\n"))
        assert e.path == "spec.mtls.mode" and e.document == 2 and e.line == LAB.count("\n") + 6
        assert 'did you mean "STRICT"?' in e.fix and "case-sensitive" in e.fix


@pytest.mark.parametrize("spec,path,words", [
    ('  mtls: "STRICT"\n', "spec.mtls", "expected a mapping"),
    ("  mtls: {mdoe: STRICT}\n", "spec.mtls.mdoe", 'did you mean "mode"'),
    ('  selector: "oops"\n', "spec.selector", "expected a mapping"),
    ("  selector: {matchLables: {app: a}}\n", "spec.selector.matchLables", 'did you mean "matchLabels"'),
    ("  portLevelMtls: {9080: {mode: strict}}\n  selector: {matchLabels: {app: a}}\n",
     'spec.portLevelMtls["9080"].mode', '"STRICT"'),
])
def test_peer_authentication_shapes(tmp_path: Path, spec: str, path: str, words: str) -> None:
    e = refused(tmp_path, doc("PeerAuthentication", spec))
    assert e.path == path and words in (e.problem + e.fix)


@pytest.mark.parametrize("spec,path,words", [
    ("  action: allow\n", "spec.action", 'did you mean "ALLOW"'),
    ("  rules: [{to: [{operation: {ports: 9080}}]}]\n", "spec.rules[0].to[0].operation.ports", "expected a list"),
    ("  rules: [{to: [{operation: {ports: [9080]}}]}]\n", "spec.rules[0].to[0].operation.ports[0]", "quote"),
    ("  rules: [{form: [{source: {principals: [a]}}]}]\n", "spec.rules[0].form", 'did you mean "from"'),
])
def test_authorization_policy_shapes(tmp_path: Path, spec: str, path: str, words: str) -> None:
    e = refused(tmp_path, doc("AuthorizationPolicy", spec))
    assert e.path == path and words in (e.problem + e.fix)


def test_valid_policies_are_kept_with_empty_fields_pruned(tmp_path: Path) -> None:
    lab = loaded(tmp_path,
                 doc("PeerAuthentication", "  mtls:\n"),
                 doc("AuthorizationPolicy", "  action: DENY\n  rules: [{to: [{operation: {ports: [\"9080\"]}}]}]\n")
                 .replace("name: x", "name: y"),
                 doc("PeerAuthentication", "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n"
                     "    9080: {mode: DISABLE}\n").replace("name: x", "name: z"))
    specs = {r.name: r.spec for r in lab.resources}
    assert specs["x"] == {}
    assert specs["y"]["rules"][0]["to"][0]["operation"]["ports"] == ["9080"]
    assert specs["z"]["portLevelMtls"] == {"9080": {"mode": "DISABLE"}}


# --- Gateway API --------------------------------------------------------------------------


GATEWAY_API = "gateway.networking.k8s.io/v1"


def test_waypoint_gateway_is_accepted(tmp_path: Path) -> None:
    spec = ("  gatewayClassName: istio-waypoint\n"
            "  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n")
    lab = loaded(tmp_path, doc("Gateway", spec, GATEWAY_API))
    assert lab.kept("Gateway")[0].spec["gatewayClassName"] == "istio-waypoint"


@pytest.mark.parametrize("spec,path,words", [
    ("  listeners: [{name: a, port: 80, protocol: HTTP}]\n", "spec.gatewayClassName", "missing required"),
    ("  gatewayClassName: x\n  listeners: [{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]\n",
     "spec.listeners", "same name"),
    ("  gatewayClassName: x\n  listeners: [{name: a, port: \"80\", protocol: HTTP}]\n", "spec.listeners[0].port",
     "remove the quotes"),
    ("  gatewayClassName: x\n  listners: []\n", "spec.listners", 'did you mean "listeners"'),
])
def test_gateway_shapes(tmp_path: Path, spec: str, path: str, words: str) -> None:
    e = refused(tmp_path, doc("Gateway", spec, GATEWAY_API))
    assert e.path == path and words in (e.problem + e.fix)


def test_gateway_needs_a_spec(tmp_path: Path) -> None:
    text = f"---\napiVersion: {GATEWAY_API}\nkind: Gateway\nmetadata: {{name: g}}\n"
    assert refused(tmp_path, text).path == "spec"


def test_httproute_shapes(tmp_path: Path) -> None:
    ok = ("  parentRefs: [{name: reviews, kind: Service, group: \"\"}]\n"
          "  rules: [{backendRefs: [{name: reviews-v1, port: 9080}]}]\n")
    assert loaded(tmp_path, doc("HTTPRoute", ok, GATEWAY_API)).kept("HTTPRoute")
    e = refused(tmp_path, doc("HTTPRoute", ok.replace("port: 9080", "port: 99999"), GATEWAY_API))
    assert e.path == "spec.rules[0].backendRefs[0].port" and "maximum" in e.problem


def test_an_overlong_patterned_string_is_refused_without_backtracking(tmp_path: Path) -> None:
    host = "a-" * 40_000 + "!"
    e = refused(tmp_path, doc("HTTPRoute", f"  hostnames: [\"{host}\"]\n", GATEWAY_API))
    assert e.path == "spec.hostnames[0]"


# --- Kubernetes kinds ----------------------------------------------------------------------


DEPLOYMENT = """---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: netlab/http-echo
"""


@pytest.mark.parametrize("extra,path,words", [
    ("          resources: {limits: {cpu: [1]}}\n", "resources.limits.cpu", "expected a string or"),
    ("          livenessProbe: {httpGet: {prot: 80}}\n", "livenessProbe.httpGet.prot", 'did you mean "port"'),
    ("          readinessProbe: {periodSeconds: \"5\"}\n", "readinessProbe.periodSeconds", "remove the quotes"),
    ("          securityContext: {runAsUser: root}\n", "securityContext.runAsUser", "expected an integer"),
])
def test_ignored_fields_still_have_kubernetes_shapes(tmp_path: Path, extra: str, path: str, words: str) -> None:
    e = refused(tmp_path, DEPLOYMENT + extra)
    assert e.path == "spec.template.spec.containers[0]." + path
    assert words in (e.problem + e.fix) and "Kubernetes" not in e.problem
    assert e.line == LAB.count("\n") + DEPLOYMENT.count("\n") + 1


def test_kubernetes_schema_version_is_pinned() -> None:
    assert k8s_schema.schema_version() == k8s_schema.KUBERNETES_VERSION
    assert set(k8s_schema.KINDS) == {"Namespace", "ServiceAccount", "Deployment", "Service", "StatefulSet", "Pod",
                                     "ConfigMap", "Secret"}
    for kind, api in k8s_schema.KINDS.items():
        assert KINDS[kind][0] == (api,)


def test_strategy_shape(tmp_path: Path) -> None:
    e = refused(tmp_path, DEPLOYMENT.replace("spec:\n  selector", "spec:\n  strategy: {type: 5}\n  selector"))
    assert e.path == "spec.strategy.type"


def test_case_only_typos_get_the_right_suggestion(tmp_path: Path) -> None:
    """difflib alone misses podCidr → podCIDR (ratio 0.57); case is compared first."""
    path = tmp_path / "lab.yaml"
    path.write_text(LAB.replace("spec: {nodes:", "spec: {network: {podCidr: 10.244.0.0/16}, nodes:"))
    with pytest.raises(TopologyError) as info:
        load([str(path)])
    assert info.value.path == "spec.network.podCidr" and 'did you mean "podCIDR"?' in info.value.fix
