"""`netlab export FILE... --to kind DIR`: the same lab on a real cluster (kind + Istio).

What a real cluster cannot take as written is rewritten, and nothing else:
- the `kind: Lab` document is left out (kubectl has no such kind); its nodes, labels and
  CIDRs become a kind cluster config, its Istio version and profile an `istioctl
  install` line;
- the built-in images become public images that behave the same way (IMAGES; what
  differs is written into the README the export writes);
- `nodeName: <lab node>` becomes a nodeSelector on `netlab.dev/node`, a label the kind
  config puts on the worker standing for that node (kind names its nodes itself);
- Namespaces and ServiceAccounts go first, so one `kubectl apply -f` creates them
  before what lives in them; every other document keeps its order.

The originals ride along in the pod template annotation `netlab.dev/export`
(topology/exported.py), so `netlab up manifests.yaml LAB.yaml` plans exactly what the
original files plan. The output is validated before it is written, offline: the
Kubernetes kinds with Kubernetes' OpenAPI schemas (kubernetes-validate), the Istio and
Gateway API kinds with their CRDs, and the result is loaded back by netlab.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml

from netlab.errors import NetlabError
from netlab.model import Lab
from netlab.topology import crd, k8s_schema
from netlab.topology.documents import Document, read_file
from netlab.topology.exported import ANNOTATION, NODE_LABEL
from netlab.topology.loader import load
from netlab.topology.safe_yaml import Budget

TARGETS = ("kind",)
# Istio releases whose behaviour netlab's profiles were read from (plan/profile.py).
ISTIO_RELEASES = {"1.23": "1.23.0", "1.24+": "1.24.0"}
# Gateway API CRDs the Istio docs of that release install (Istio's "Getting started" pages).
GATEWAY_API = {"1.23": "v1.1.0", "1.24+": "v1.2.0"}
# Labels a kubelet may set on its own node (kubelet --node-labels): kubernetes.io and
# k8s.io labels outside this list make the kubelet refuse to start, so they are left out.
KUBELET_LABELS = ("kubernetes.io/os", "kubernetes.io/arch", "topology.kubernetes.io/zone",
                  "topology.kubernetes.io/region", "node.kubernetes.io/instance-type")
KUBELET_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
FIRST = ("Namespace", "ServiceAccount")
NODE_NAME_ANNOTATION = "netlab.dev/node-name"  # a waypoint Gateway's node, in netlab (plan/modes/waypoint.py)


@dataclass(frozen=True)
class PublicImage:
    """A public image standing in for a built-in one, and how it differs."""

    image: str
    differs: str


IMAGES: dict[str, PublicImage] = {
    "netlab/http-echo": PublicImage(
        "ealen/echo-server:latest",
        "Echoes the request as JSON too, in its own shape (`request.headers`, `http.method`, ...), "
        "not netlab's (`peer`, `local`, `headers`); no `X-Echo-Peer` header. It listens on ONE port "
        "(env PORT): the first containerPort; further ports of the container are not served."),
    "netlab/tcp-echo": PublicImage(
        "docker.io/istio/tcp-echo-server:1.3",
        "Istio's sample server: reads a line and answers `<prefix> <line>` (line by line, the prefix "
        "and a space before each line), where netlab echoes every chunk with the prefix before it. "
        "Its ports are its first argument, comma-separated."),
    "netlab/sleep": PublicImage(
        "curlimages/curl:latest",
        "Runs `sleep infinity` so `kubectl exec` has a pod with curl, as Istio's sleep/curl samples do. "
        "netlab's sleep pod has no process at all and uses the host's curl."),
    "netlab/reverse-proxy": PublicImage(
        "quay.io/prometheuscommunity/prom-label-proxy:latest",
        "prom-label-proxy is the Go reverse proxy netlab's models (httputil.NewSingleHostReverseProxy, "
        "Host kept); it also enforces a label (`--label=namespace`): Prometheus API calls must carry "
        "`?namespace=...`. `--rewrite-host-header-to` has no equivalent flag and is dropped."),
    "netlab/prometheus": PublicImage(
        "docker.io/prom/prometheus:v2.42.0",
        "The same Prometheus (2.42.0, Debian bookworm's version) with the image's own config, which "
        "scrapes Prometheus itself; netlab's has no scrape job. Storage is the image's /prometheus."),
}


@dataclass
class Export:
    """What `export` wrote, for the command line to report."""

    dir: str
    files: list[str] = field(default_factory=list)
    documents: int = 0
    mapped: dict[str, str] = field(default_factory=dict)  # built-in image -> public image used
    notes: list[str] = field(default_factory=list)


def export(files: Sequence[str], target: str, out_dir: str) -> Export:
    """Write the kind config, the manifests and a README for `files` into `out_dir`."""
    if target not in TARGETS:
        raise NetlabError(f"cannot export to {target!r}; targets: {', '.join(TARGETS)}")
    lab = load(list(files))  # a bad file exports nothing
    docs, lab_doc = _documents(files)
    result = Export(dir=out_dir)
    manifests = [_rewrite(d, result) for d in docs]
    manifests.sort(key=lambda d: 0 if d.get("kind") in FIRST else 1)  # stable: others keep their order
    validate(manifests)
    os.makedirs(out_dir, exist_ok=True)
    kind_config = kind_cluster(lab, result)
    paths = {"kind-cluster.yaml": yaml.safe_dump(kind_config, sort_keys=False),
             "manifests.yaml": _dump_all(manifests, lab),
             "lab.yaml": lab_doc,
             "README.md": readme(lab, result, any(d.get("kind") in ("Gateway", "HTTPRoute") for d in manifests))}
    for name, text in paths.items():
        path = os.path.join(out_dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        result.files.append(path)
    result.documents = len(manifests)
    load([os.path.join(out_dir, "manifests.yaml"), os.path.join(out_dir, "lab.yaml")])  # netlab reads it back
    return result


def _documents(files: Sequence[str]) -> tuple[list[dict[str, Any]], str]:
    """The non-Lab documents of `files` in order, and the Lab document as YAML text."""
    budget = Budget()
    docs: list[dict[str, Any]] = []
    lab_doc = ""
    for file in files:
        for doc in read_file(os.fspath(file), budget):
            if doc.data.get("kind") == "Lab":
                lab_doc = "# The Lab document of the original files: `netlab up manifests.yaml lab.yaml`\n" \
                          "# builds the same lab netlab built from them. A cluster never sees this file.\n" \
                          + yaml.safe_dump(doc.data, sort_keys=False)
            else:
                docs.append(copy.deepcopy(doc.data))
    return docs, lab_doc


def _rewrite(data: dict[str, Any], result: Export) -> dict[str, Any]:
    if data.get("kind") == "Gateway" and NODE_NAME_ANNOTATION in ((data.get("metadata") or {}).get("annotations") or {}):
        result.notes.append(f"Gateway {data['metadata'].get('name')}: {NODE_NAME_ANNOTATION} pins the waypoint "
                            "pod in netlab only; in a cluster the scheduler places it")
    if data.get("kind") != "Deployment":
        return data
    template = data["spec"]["template"]
    pod = template["spec"]
    saved: dict[str, Any] = {"containers": copy.deepcopy(pod["containers"])}
    if pod.get("nodeName"):
        saved["nodeName"] = pod.pop("nodeName")
        pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), NODE_LABEL: saved["nodeName"]}
    pod["containers"] = [_container(c, result) for c in pod["containers"]]
    if saved["containers"] == pod["containers"] and "nodeName" not in saved:
        return data  # nothing a cluster cannot run: no annotation needed
    meta = template.setdefault("metadata", {}) or {}
    template["metadata"] = meta
    meta["annotations"] = {**(meta.get("annotations") or {}),
                           ANNOTATION: json.dumps(saved, separators=(",", ":"), sort_keys=True)}
    return data


def _container(c: dict[str, Any], result: Export) -> dict[str, Any]:
    image = c.get("image", "")
    if c.get("command") or image not in IMAGES:
        return dict(c)  # a user's own command and image go as they are
    public = IMAGES[image]
    result.mapped[image] = public.image
    ports = [p["containerPort"] for p in c.get("ports") or [] if (p.get("protocol") or "TCP") == "TCP"]
    flags = _flags(c.get("args") or [])
    out = {k: v for k, v in c.items() if k not in ("image", "args")}
    out["image"] = public.image
    port = ports[0] if ports else 8080  # netlab's default app port (planner.DEFAULT_APP_PORT)
    if image == "netlab/http-echo":
        out["env"] = [*(c.get("env") or []), {"name": "PORT", "value": str(port)}]
        if len(ports) > 1:
            result.notes.append(f"container {c['name']!r}: ports {ports[1:]} are not served by {public.image}")
    elif image == "netlab/tcp-echo":
        out["args"] = [",".join(str(p) for p in ports or [port]), flags.get("--prefix", "").rstrip() or "echo"]
    elif image == "netlab/sleep":
        out["command"] = ["/bin/sleep", "infinity"]
    elif image == "netlab/prometheus":  # the image's entrypoint is prometheus; args replace its CMD
        out["args"] = ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                       f"--web.listen-address=0.0.0.0:{ports[0] if ports else 9090}", *(c.get("args") or [])]
    elif image == "netlab/reverse-proxy":
        out["args"] = [f"--insecure-listen-address=0.0.0.0:{port}", f"--upstream={flags.get('--upstream', '')}",
                       "--label=namespace"]
        if "--rewrite-host-header-to" in flags:
            result.notes.append(f"container {c['name']!r}: --rewrite-host-header-to has no prom-label-proxy "
                                "flag and was dropped")
    return out


def _flags(args: list[str]) -> dict[str, str]:
    """`--name value` and `--name=value` pairs of a built-in image's args."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            out[k] = v
        elif a.startswith("--") and i + 1 < len(args):
            out[a] = args[i + 1]
            i += 1
        i += 1
    return out


def kind_cluster(lab: Lab, result: Export) -> dict[str, Any]:
    """A kind config: a control plane, one worker per Lab node with its labels, the Lab's CIDRs."""
    workers = []
    for node in lab.nodes:
        labels = {k: v for k, v in node.labels.items() if _kubelet_may_set(k)}
        dropped = sorted(set(node.labels) - set(labels) - {"kubernetes.io/hostname"})
        if dropped:
            result.notes.append(f"node {node.name}: labels {', '.join(dropped)} are left out "
                                "(a kubelet may not set them on its own node)")
        workers.append({"role": "worker", "labels": {**labels, NODE_LABEL: node.name}})
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": lab.name,
            "networking": {"podSubnet": lab.pod_cidr, "serviceSubnet": lab.service_cidr},
            "nodes": [{"role": "control-plane"}, *workers]}


def _kubelet_may_set(key: str) -> bool:
    prefix = key.split("/", 1)[0] if "/" in key else ""
    restricted = prefix.endswith("kubernetes.io") or prefix.endswith("k8s.io")
    return not restricted or key in KUBELET_LABELS or key.startswith(KUBELET_PREFIXES)


def istioctl_install(lab: Lab) -> list[str]:
    version = ISTIO_RELEASES[lab.istio_version]
    return [f"curl -L https://istio.io/downloadIstio | ISTIO_VERSION={version} sh -",
            f"istio-{version}/bin/istioctl install --set profile={lab.istio_profile} --skip-confirmation"]


def validate(manifests: list[dict[str, Any]]) -> None:
    """Every document as an API server would check it, offline; NetlabError on the first failure."""
    for i, data in enumerate(manifests, 1):
        doc = Document(file="(exported manifests.yaml)", number=i, data=data)
        kind, api = data.get("kind"), data.get("apiVersion")
        if kind in k8s_schema.KINDS:
            k8s_schema.validate(doc)
        elif kind in crd.CRD_FILES:
            crd.validate_spec(doc, kind, api)
        else:
            raise NetlabError(f"exported document {i} has kind {kind!r}, which the export cannot validate")


def _dump_all(manifests: list[dict[str, Any]], lab: Lab) -> str:
    head = (f"# Lab {lab.name}, exported by `netlab export` for a real cluster: see README.md.\n"
            f"# Built-in images are mapped to public ones; the originals are in each pod template's\n"
            f"# {ANNOTATION} annotation, so `netlab up manifests.yaml lab.yaml` builds the same lab.\n")
    return head + "---\n" + yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=False).replace(
        "\n...\n", "\n")


def readme(lab: Lab, result: Export, gateway_api: bool) -> str:
    install = istioctl_install(lab)
    steps = ["kind create cluster --config kind-cluster.yaml", *install]
    if gateway_api:
        steps.append("kubectl get crd gateways.gateway.networking.k8s.io >/dev/null 2>&1 || kubectl apply -f "
                     f"https://github.com/kubernetes-sigs/gateway-api/releases/download/"
                     f"{GATEWAY_API[lab.istio_version]}/standard-install.yaml")
    steps += ["kubectl apply -f manifests.yaml",
              "kubectl wait --for=condition=Available deployment --all --all-namespaces --timeout=300s"]
    rows = "\n".join(f"| `{k}` | `{v.image}` | {v.differs} |" for k, v in IMAGES.items() if k in result.mapped)
    notes = "\n".join(f"- {n}" for n in result.notes) or "- none"
    return f"""# Lab `{lab.name}` on a kind cluster

Written by `netlab export`. Files:

- `kind-cluster.yaml`: a control plane and one worker per Lab node, with the node's labels
  and `{NODE_LABEL}: <lab node>`; the Lab's pod and service CIDRs.
- `manifests.yaml`: the Kubernetes, Istio and Gateway API documents, without the `kind: Lab`
  document, with the built-in images mapped to public ones (below) and `nodeName: <lab node>`
  turned into a nodeSelector on `{NODE_LABEL}`. Validated offline before it was written:
  Kubernetes kinds against Kubernetes {k8s_schema.schema_version()}'s OpenAPI schemas, Istio and
  Gateway API kinds against their CRDs.
- `lab.yaml`: the Lab document; `netlab up manifests.yaml lab.yaml` builds the same lab in
  netlab (the originals are kept in each pod template's `{ANNOTATION}` annotation).

## Steps

Needs docker, [kind](https://kind.sigs.k8s.io/), kubectl and curl.

```sh
{chr(10).join(steps)}
```

Istio {ISTIO_RELEASES[lab.istio_version]} stands for the Lab's `istio.version: "{lab.istio_version}"`,
profile `{lab.istio_profile}`. Remove everything with `kind delete cluster --name {lab.name}`.

## Images

| netlab image | public image | what differs |
|---|---|---|
{rows or "| (none used) | | |"}

Containers with their own `command:` keep their image and command: in netlab the command
ran a program of the host inside the pod's network namespace, in kind it runs in the image.

## Notes

{notes}
- Pod names differ: netlab names pods `<deployment>-<index>`, a cluster adds random suffixes.
- Service ClusterIPs differ unless the files set them: netlab allocates them in document order.
"""
