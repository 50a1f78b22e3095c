"""The topology layer: examples load into the expected model; bad input gives one precise error."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from netlab.errors import TopologyError
from netlab.model import Resource
from netlab.topology import SUPPORTED_KINDS, eligible_nodes, load, schema_path

REPO = Path(__file__).resolve().parents[2]
BOOKINFO = REPO / "topologies" / "bookinfo.yaml"
TWO_PODS = REPO / "topologies" / "two-pods.yaml"

LAB = """\
apiVersion: netlab.dev/v1alpha1
kind: Lab
metadata: {name: t}
spec:
  nodes:
    - name: node-1
      labels: {zone: a}
    - name: node-2
      labels: {zone: b}
"""

ECHO = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
        - name: echo
          image: netlab/http-echo
          ports: [{containerPort: 8080, name: http}]
"""


def write(tmp_path: Path, *docs: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text("---\n".join(textwrap.dedent(d) for d in docs))
    return path


def error_of(paths: list[Path]) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        load([str(p) for p in paths])
    return info.value


# --- the examples ----------------------------------------------------------------------


def test_bookinfo_parses_into_expected_model() -> None:
    lab = load([str(BOOKINFO)])
    assert lab.name == "bookinfo"
    assert [n.name for n in lab.nodes] == ["node-1", "node-2"]
    assert lab.istio_version == "1.24+" and lab.trust_domain == "cluster.local"
    assert (lab.pod_cidr, lab.service_cidr) == ("10.244.0.0/16", "10.96.0.0/16")
    bookinfo = lab.namespace("bookinfo")
    assert bookinfo is not None and bookinfo.labels == {}  # no mesh labels
    assert lab.namespace("default") is not None
    accounts = {(a.namespace, a.name) for a in lab.service_accounts}
    assert {("bookinfo", "sleep"), ("bookinfo", "bookinfo-ratings"), ("bookinfo", "default"),
            ("default", "default")} <= accounts

    deps = {d.name: d for d in lab.deployments}
    sleep, ratings = deps["sleep"], deps["ratings"]
    assert (sleep.namespace, sleep.service_account, sleep.node_name) == ("bookinfo", "sleep", "node-1")
    assert sleep.containers[0].image == "netlab/sleep"
    assert ratings.replicas == 2 and ratings.service_account == "bookinfo-ratings"
    assert ratings.node_name is None and ratings.node_selector
    assert [n.name for n in eligible_nodes(lab, ratings)] == ["node-1", "node-2"]
    assert [n.name for n in eligible_nodes(lab, sleep)] == ["node-1"]
    port = ratings.containers[0].ports[0]
    assert (port.container_port, port.name, port.protocol) == (9080, "http", "TCP")

    (svc,) = lab.services
    assert (svc.namespace, svc.name, svc.selector, svc.cluster_ip) == ("bookinfo", "ratings", {"app": "ratings"}, None)
    assert [(p.name, p.port, p.target_port) for p in svc.ports] == [("http", 9080, "http")]
    assert svc.source is not None and svc.source.file == str(BOOKINFO) and svc.source.document == 7
    assert lab.files == [str(BOOKINFO)]


def test_two_pods_uses_defaults() -> None:
    lab = load([str(TWO_PODS)])
    assert lab.name == "two-pods" and [n.name for n in lab.nodes] == ["node-1"]
    assert lab.nodes[0].labels == {"kubernetes.io/hostname": "node-1"}
    assert {d.name for d in lab.deployments} == {"sleep", "echo"}
    for d in lab.deployments:
        assert (d.namespace, d.replicas, d.service_account) == ("default", 1, "default")
    (svc,) = lab.services
    assert (svc.name, svc.ports[0].port, svc.ports[0].target_port) == ("echo", 80, "http")


def test_documents_may_span_files_and_name_can_be_overridden(tmp_path: Path) -> None:
    apps = write(tmp_path, ECHO, """\
        apiVersion: security.istio.io/v1
        kind: PeerAuthentication
        metadata: {name: default, namespace: istio-system}
        spec: {mtls: {mode: STRICT}}
        """, name="apps.yaml")
    header = write(tmp_path, LAB, name="lab.yaml")
    lab = load([str(apps), str(header)], name_override="copy-2")
    assert lab.name == "copy-2"
    assert lab.files == [str(apps), str(header)]
    (pa,) = lab.kept("PeerAuthentication")
    assert isinstance(pa, Resource)
    assert (pa.namespace, pa.name, pa.spec) == ("istio-system", "default", {"mtls": {"mode": "STRICT"}})


def test_real_world_manifest_with_ignored_fields_loads(tmp_path: Path) -> None:
    manifest = """\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: ratings-v1
          labels: {app: ratings, version: v1}
          annotations: {deployment.kubernetes.io/revision: "1"}
          uid: 5b8c1f9e-0000-0000-0000-000000000000
          resourceVersion: "1234"
          generation: 1
          creationTimestamp: "2024-01-01T00:00:00Z"
        spec:
          replicas: 1
          revisionHistoryLimit: 10
          progressDeadlineSeconds: 600
          strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}}
          selector:
            matchLabels: {app: ratings, version: v1}
          template:
            metadata:
              labels: {app: ratings, version: v1}
              annotations: {sidecar.istio.io/inject: "false"}
              creationTimestamp: null
            spec:
              serviceAccountName: default
              restartPolicy: Always
              terminationGracePeriodSeconds: 30
              dnsPolicy: ClusterFirst
              securityContext: {runAsNonRoot: true}
              volumes: [{name: tmp, emptyDir: {}}]
              containers:
                - name: ratings
                  image: netlab/http-echo
                  imagePullPolicy: IfNotPresent
                  resources: {requests: {cpu: 10m}, limits: {memory: 64Mi}}
                  livenessProbe: {httpGet: {path: /, port: 9080}}
                  readinessProbe: {tcpSocket: {port: 9080}}
                  securityContext: {runAsUser: 1000}
                  volumeMounts: [{name: tmp, mountPath: /tmp}]
                  terminationMessagePath: /dev/termination-log
                  ports:
                    - containerPort: 9080
                      name: http
                      protocol: TCP
                  env:
                    - {name: LOG_DIR, value: /tmp/logs}
        status:
          availableReplicas: 1
        """
    service = """\
        apiVersion: v1
        kind: Service
        metadata: {name: ratings, labels: {app: ratings, service: ratings}}
        spec:
          type: ClusterIP
          sessionAffinity: None
          ipFamilies: [IPv4]
          ipFamilyPolicy: SingleStack
          internalTrafficPolicy: Cluster
          selector: {app: ratings}
          ports:
            - {name: http, port: 9080, targetPort: 9080, protocol: TCP, appProtocol: http}
        status: {loadBalancer: {}}
        """
    lab = load([str(write(tmp_path, LAB, manifest, service))])
    (dep,) = lab.deployments
    assert dep.annotations == {"sidecar.istio.io/inject": "false"}
    assert dep.containers[0].env == {"LOG_DIR": "/tmp/logs"}
    assert lab.services[0].ports[0].app_protocol == "http"


# --- malformed input: one error naming file, document, field path, and a fix -----------

BAD_INPUTS = [
    # (id, documents after the Lab doc, expected document number, expected path, problem words)
    ("unknown kind", ["apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\n"], 2, "kind",
     "unsupported kind"),
    ("missing kind", ["apiVersion: v1\nmetadata: {name: c}\n"], 2, "kind", "missing kind"),
    ("missing apiVersion", ["kind: Namespace\nmetadata: {name: n}\n"], 2, "apiVersion", "missing apiVersion"),
    ("wrong apiVersion", [ECHO.replace("apps/v1", "extensions/v1beta1")], 2, "apiVersion", "not supported"),
    ("unknown field with suggestion", [ECHO.replace("image:", "imagee:")], 2,
     "spec.template.spec.containers[0].imagee", 'unknown field "imagee"'),
    ("wrong type replicas", [ECHO.replace("spec:\n  selector", 'spec:\n  replicas: "2"\n  selector')], 2,
     "spec.replicas", "expected an integer"),
    ("label value not a string", [ECHO.replace("labels: {app: echo}", "labels: {app: echo, v: 1}")], 2,
     'spec.template.metadata.labels.v', "expected a string"),
    ("image not built in", [ECHO.replace("netlab/http-echo", "nginx:1.25")], 2,
     "spec.template.spec.containers[0].image", "not built in"),
    ("selector does not match template", [ECHO.replace("matchLabels: {app: echo}", "matchLabels: {app: ech0}")],
     2, "spec.selector.matchLabels.app", "does not match"),
    ("duplicate deployment", [ECHO, ECHO], 3, "metadata.name", "already declared"),
    ("namespace not declared", [ECHO.replace("{name: echo}", "{name: echo, namespace: shop}")], 2,
     "metadata.namespace", "not declared"),
    ("service account not declared",
     [ECHO.replace("    spec:\n      containers", "    spec:\n      serviceAccountName: echo\n      containers")],
     2, "spec.template.spec.serviceAccountName", "ServiceAccount 'echo' is not declared"),
    ("nodeName not a lab node",
     [ECHO.replace("    spec:\n      containers", "    spec:\n      nodeName: node-3\n      containers")],
     2, "spec.template.spec.nodeName", "not a Lab node"),
    ("nodeSelector matches no node",
     [ECHO.replace("    spec:\n      containers", "    spec:\n      nodeSelector: {zone: c}\n      containers")],
     2, "spec.template.spec.nodeSelector", "matches no node"),
    ("targetPort name not found",
     [ECHO, "apiVersion: v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  selector: {app: echo}\n"
            "  ports: [{port: 80, targetPort: htp}]\n"],
     3, "spec.ports[0].targetPort", "not a containerPort name"),
    ("duplicate clusterIP",
     ["apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: 10.96.0.20\n"
      "  selector: {app: a}\n  ports: [{port: 80}]\n",
      "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  clusterIP: 10.96.0.20\n"
      "  selector: {app: b}\n  ports: [{port: 80}]\n"],
     3, "spec.clusterIP", "already used"),
    ("clusterIP outside serviceCIDR",
     ["apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: 10.97.0.10\n"
      "  selector: {app: a}\n  ports: [{port: 80}]\n"],
     2, "spec.clusterIP", "not a usable address"),
    ("clusterIP reserved for DNS",
     ["apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: 10.96.0.10\n"
      "  selector: {app: a}\n  ports: [{port: 80}]\n"],
     2, "spec.clusterIP", "reserved"),
    ("service type NodePort",
     ["apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  type: NodePort\n"
      "  selector: {app: a}\n  ports: [{port: 80}]\n"],
     2, "spec.type", "not supported"),
    ("unsupported affinity",
     [ECHO.replace("    spec:\n      containers", "    spec:\n      affinity: {podAntiAffinity: {}}\n      containers")],
     2, "spec.template.spec.affinity.podAntiAffinity", "not supported"),
    ("duplicate yaml key", [ECHO.replace("metadata: {name: echo}", "metadata:\n  name: echo\n  name: echo2")],
     2, "metadata.name", "duplicate key"),
    ("args item not a string", [ECHO.replace("image: netlab/http-echo", "image: netlab/http-echo\n          args: [8080]")],
     2, "spec.template.spec.containers[0].args[0]", "expected a string"),
    ("env valueFrom", [ECHO.replace("image: netlab/http-echo",
                                    "image: netlab/http-echo\n          env: [{name: IP, valueFrom: {}}]")],
     2, "spec.template.spec.containers[0].env[0].valueFrom", "not supported"),
    ("kept kind wrong apiVersion", ["apiVersion: security.istio.io/v1alpha3\nkind: AuthorizationPolicy\n"
                                    "metadata: {name: deny}\n"], 2, "apiVersion", "not supported"),
    ("document not a mapping", ["- just\n- a list\n"], 2, "", "must be a mapping"),
]


@pytest.mark.parametrize("docs,number,path,words", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_object_documents(tmp_path: Path, docs: list[str], number: int, path: str, words: str) -> None:
    file = write(tmp_path, LAB, *docs)
    e = error_of([file])
    assert e.file == str(file)
    assert e.document == number
    assert e.path == path
    assert words in e.problem
    assert e.fix
    assert e.line is not None
    assert str(e).startswith(f"{file}:{e.line} (document {number})")
    assert "\n  fix: " in str(e)


BAD_LABS = [
    ("istio version", LAB.replace("spec:\n", 'spec:\n  istio: {version: "1.25"}\n'), "spec.istio.version",
     "not allowed", 5),
    ("istio version unquoted", LAB.replace("spec:\n", "spec:\n  istio: {version: 1.23}\n"), "spec.istio.version",
     "expected a string", 5),
    ("lab name", LAB.replace("{name: t}", "{name: Bookinfo}"), "metadata.name", "not a valid", 3),
    ("unknown lab field", LAB.replace("  nodes:", "  nodez: []\n  nodes:"), "spec.nodez", "unknown field", 5),
    ("no nodes", "apiVersion: netlab.dev/v1alpha1\nkind: Lab\nmetadata: {name: t}\nspec: {nodes: []}\n",
     "spec.nodes", "at least 1", 4),
    ("missing spec", "apiVersion: netlab.dev/v1alpha1\nkind: Lab\nmetadata: {name: t}\n", "spec",
     "missing required field spec", 1),
    ("duplicate node", LAB.replace("name: node-2", "name: node-1"), "spec.nodes[1].name", "declared twice", 8),
    ("cidr host bits", LAB.replace("spec:\n", "spec:\n  network: {podCIDR: 10.244.1.0/15}\n"),
     "spec.network.podCIDR", "not a valid IPv4 network", 5),
    ("cidr pattern", LAB.replace("spec:\n", "spec:\n  network: {serviceCIDR: 10.96.0.0}\n"),
     "spec.network.serviceCIDR", "not a valid", 5),
    ("pod cidr too small", LAB.replace("spec:\n", "spec:\n  network: {podCIDR: 10.244.0.0/24}\n"),
     "spec.network.podCIDR", "too small", 5),
    ("overlapping cidrs", LAB.replace("spec:\n", "spec:\n  network: {serviceCIDR: 10.244.128.0/24}\n"),
     "spec.network.serviceCIDR", "overlaps", 5),
]


@pytest.mark.parametrize("text,path,words,line", [c[1:] for c in BAD_LABS], ids=[c[0] for c in BAD_LABS])
def test_bad_lab_documents(tmp_path: Path, text: str, path: str, words: str, line: int) -> None:
    file = write(tmp_path, ECHO, text)
    e = error_of([file])
    assert (e.file, e.document, e.path) == (str(file), 2, path)
    assert words in e.problem
    assert e.fix
    assert e.line == line + ECHO.count("\n") + 1  # the Lab is the second document


def test_unknown_field_suggests_the_right_one(tmp_path: Path) -> None:
    e = error_of([write(tmp_path, LAB, ECHO.replace("image:", "imagee:"))])
    assert 'did you mean "image"?' in e.fix
    assert e.line == LAB.count("\n") + 2 + 10  # after the Lab doc and its '---', line 11 of ECHO


def test_type_fix_shows_yaml_to_write(tmp_path: Path) -> None:
    args = ECHO.replace("image: netlab/http-echo", "image: netlab/http-echo\n          args: [8080]")
    assert 'quote the value so YAML reads it as text: - "8080"' in error_of([write(tmp_path, LAB, args)]).fix
    label = LAB.replace("{zone: a}", '{"topology.kubernetes.io/zone": 1}')
    e = error_of([write(tmp_path, label)])
    assert e.path == 'spec.nodes[0].labels["topology.kubernetes.io/zone"]'
    assert 'topology.kubernetes.io/zone: "1"' in e.fix


def test_unknown_kind_lists_supported_kinds(tmp_path: Path) -> None:
    e = error_of([write(tmp_path, LAB, "apiVersion: v1\nkind: Servce\nmetadata: {name: c}\n")])
    assert 'did you mean "Service"?' in e.problem
    for kind in SUPPORTED_KINDS:
        assert kind in e.fix


def test_yaml_syntax_error_names_document_and_line(tmp_path: Path) -> None:
    file = write(tmp_path, LAB, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [oops\n")
    e = error_of([file])
    assert (e.file, e.document, e.path) == (str(file), 2, "")
    assert "YAML syntax error" in e.problem
    assert e.line is not None and e.line > LAB.count("\n")
    assert e.fix


def test_tab_indentation_fix_mentions_tabs(tmp_path: Path) -> None:
    e = error_of([write(tmp_path, LAB + "  extra:\n\t- x\n")])
    assert e.document == 1 and "tab" in e.fix


def test_no_lab_document(tmp_path: Path) -> None:
    file = write(tmp_path, ECHO)
    e = error_of([file])
    assert e.file == str(file) and e.document is None
    assert "no Lab document" in e.problem and "kind: Lab" in e.fix


def test_two_lab_documents_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, LAB, name="a.yaml")
    second = write(tmp_path, ECHO, LAB, name="b.yaml")
    e = error_of([first, second])
    assert (e.file, e.document, e.path) == (str(second), 2, "kind")
    assert str(first) in e.problem and e.fix


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    e = error_of([missing])
    assert e.file == str(missing) and "not found" in e.problem and e.fix


def test_bad_name_override(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as info:
        load([str(write(tmp_path, LAB))], name_override="Not_OK")
    assert info.value.path == "metadata.name"


def test_implicit_default_namespace_and_account_can_be_declared(tmp_path: Path) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels: {istio.io/dataplane-mode: ambient}\n"
    sa = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: default}\n"
    lab = load([str(write(tmp_path, LAB, ns, sa, ECHO))])
    default = lab.namespace("default")
    assert default is not None and default.labels == {"istio.io/dataplane-mode": "ambient"}
    assert [n.name for n in lab.namespaces].count("default") == 1
    assert [(a.namespace, a.name) for a in lab.service_accounts].count(("default", "default")) == 1


def test_non_builtin_image_with_command_is_accepted(tmp_path: Path) -> None:
    doc = ECHO.replace("image: netlab/http-echo", 'image: busybox\n          command: ["/bin/sleep", "3600"]')
    lab = load([str(write(tmp_path, LAB, doc))])
    assert lab.deployments[0].containers[0].command == ["/bin/sleep", "3600"]


def test_docs_name_every_ignored_and_refused_field() -> None:
    from netlab.topology import ignored

    text = (REPO / "docs" / "topology.md").read_text()
    names = [f for fields in ignored.all_lists().values() for f in fields]
    refused = [ignored.UNSUPPORTED_POD_SPEC, ignored.UNSUPPORTED_CONTAINER, ignored.UNSUPPORTED_ENV,
               ignored.UNSUPPORTED_CONTAINER_PORT, ignored.UNSUPPORTED_SELECTOR, ignored.UNSUPPORTED_SERVICE_SPEC,
               ignored.UNSUPPORTED_STATEFULSET_SPEC, ignored.UNSUPPORTED_AFFINITY, ignored.UNSUPPORTED_NODE_AFFINITY,
               ignored.UNSUPPORTED_NODE_SELECTOR_TERM, ignored.UNSUPPORTED_SPREAD]
    names += [f for table in refused for f in table]
    assert [f for f in names if f"`{f}`" not in text and f"`env[].{f}`" not in text
            and f"`selector.{f}`" not in text] == []


# --- the published JSON Schema -----------------------------------------------------------


def _lab_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Lab"]


def test_schema_is_valid_draft_2020_12_with_descriptions() -> None:
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    spec = schema["properties"]["spec"]["properties"]
    assert all(spec[k].get("description") for k in ("istio", "network", "nodes"))


@pytest.mark.parametrize("example", [BOOKINFO, TWO_PODS], ids=lambda p: p.name)
def test_schema_accepts_example_lab_docs(example: Path) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
    (doc,) = _lab_docs(example)
    assert list(validator.iter_errors(doc)) == []


@pytest.mark.parametrize("mutate", [
    lambda d: d["spec"].update(nodes=[]),
    lambda d: d["spec"].setdefault("istio", {}).update(version="1.22"),
    lambda d: d["metadata"].update(name="a-name-that-is-far-too-long"),
    lambda d: d["spec"].update(extra=True),
    lambda d: d.update(kind="Lap"),
], ids=["no nodes", "bad version", "long name", "extra field", "wrong kind"])
def test_schema_rejects_bad_lab_docs(mutate) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
    (doc,) = _lab_docs(BOOKINFO)
    mutate(doc)
    assert list(validator.iter_errors(doc))


def test_bypass_inbound_annotation_needs_istio_1_24(tmp_path: Path) -> None:
    """1.23 has no verified bypass rules: refuse at load time, pointing at the annotation."""
    annotated = ECHO.replace("metadata: {labels: {app: echo}}",
                             "metadata:\n      labels: {app: echo}\n"
                             "      annotations: {ambient.istio.io/bypass-inbound-capture: \"true\"}")
    lab_123 = LAB.replace("spec:\n", 'spec:\n  istio: {version: "1.23"}\n', 1)
    e = error_of([write(tmp_path, lab_123, annotated)])
    assert e.path == 'spec.template.metadata.annotations["ambient.istio.io/bypass-inbound-capture"]'
    assert "1.24+" in e.problem and "1.24+" in (e.fix or "")
    assert e.line is not None
    # The same pod under 1.24+ loads.
    assert load([str(write(tmp_path, LAB, annotated, name="ok.yaml"))]).deployments[0].annotations
