"""Kubernetes fields netlab accepts but ignores, and fields it refuses with a reason.

Real manifests (bookinfo, the Istio samples) carry probes, resources and security
contexts that do not change how packets flow. Accepting them lets those files load
unchanged; everything else stays strict so a typo is never silently dropped.
The lists are data so docs/topology.md and the tests can name them.
"""

from __future__ import annotations

TOP_LEVEL = ("status",)

METADATA = (
    "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
    "deletionGracePeriodSeconds", "managedFields", "ownerReferences", "finalizers", "selfLink",
)

# metadata.annotations is read for pod templates; elsewhere it is accepted and ignored.

NAMESPACE = ("spec",)

SERVICE_ACCOUNT = ("secrets", "imagePullSecrets", "automountServiceAccountToken")

DEPLOYMENT_SPEC = ("strategy", "revisionHistoryLimit", "progressDeadlineSeconds", "minReadySeconds", "paused")

POD_TEMPLATE_METADATA = ("name", "namespace", "creationTimestamp")

POD_SPEC = (
    "restartPolicy", "terminationGracePeriodSeconds", "securityContext", "imagePullSecrets",
    "dnsPolicy", "schedulerName", "priorityClassName", "priority", "automountServiceAccountToken",
    "enableServiceLinks", "volumes", "tolerations",
)

CONTAINER = (
    "imagePullPolicy", "resources", "livenessProbe", "readinessProbe", "startupProbe",
    "securityContext", "volumeMounts", "terminationMessagePath", "terminationMessagePolicy",
    "lifecycle", "stdin", "stdinOnce", "tty",
)

SERVICE_SPEC = (
    "sessionAffinity", "sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy", "clusterIPs",
    "internalTrafficPolicy", "publishNotReadyAddresses",
)

SERVICE_PORT = ("nodePort",)

# Known fields that would change placement or wiring; ignoring them would mislead.
UNSUPPORTED_POD_SPEC = {
    "affinity": "remove it; place pods with nodeName or nodeSelector",
    "topologySpreadConstraints": "remove it; replicas are already spread round-robin over the matching nodes",
    "hostNetwork": "remove it; every netlab pod gets its own network namespace",
    "initContainers": "remove them; netlab runs only the containers list (istio-init is modelled by the mesh layer)",
    "serviceAccount": "rename it to serviceAccountName (serviceAccount is the deprecated spelling)",
    "hostname": "remove it; the pod name is the hostname",
    "subdomain": "remove it; headless DNS names are not modelled",
}

UNSUPPORTED_CONTAINER = {
    "envFrom": "list each variable under env with a literal value; netlab has no ConfigMaps or Secrets",
    "workingDir": "remove it, or cd inside command",
}

UNSUPPORTED_ENV = {
    "valueFrom": "give a literal value; netlab has no ConfigMaps, Secrets or downward API",
}

UNSUPPORTED_CONTAINER_PORT = {
    "hostPort": "remove it; reach the pod through a Service instead",
    "hostIP": "remove it; reach the pod through a Service instead",
}

UNSUPPORTED_SELECTOR = {
    "matchExpressions": "express the selector with matchLabels only",
}

UNSUPPORTED_SERVICE_SPEC = {
    "externalName": "remove it; only type ClusterIP Services are supported",
    "externalIPs": "remove it; only the ClusterIP is served",
    "loadBalancerIP": "remove it; only type ClusterIP Services are supported",
    "externalTrafficPolicy": "remove it; only type ClusterIP Services are supported",
}


def all_lists() -> dict[str, tuple[str, ...]]:
    """Every ignored-field list by where it applies, for docs and tests."""
    return {
        "top level": TOP_LEVEL,
        "metadata": METADATA,
        "Namespace": NAMESPACE,
        "ServiceAccount": SERVICE_ACCOUNT,
        "Deployment spec": DEPLOYMENT_SPEC,
        "pod template metadata": POD_TEMPLATE_METADATA,
        "pod spec": POD_SPEC,
        "container": CONTAINER,
        "Service spec": SERVICE_SPEC,
        "Service port": SERVICE_PORT,
    }
