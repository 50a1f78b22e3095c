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

STATEFULSET_SPEC = ("podManagementPolicy", "updateStrategy", "revisionHistoryLimit", "minReadySeconds",
                    "volumeClaimTemplates", "persistentVolumeClaimRetentionPolicy")

# ConfigMap and Secret: accepted (a real manifest carries them) and not served to pods.
CONFIG_OBJECT = ("data", "binaryData", "stringData", "immutable", "type")

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
    "hostNetwork": "remove it; every netlab pod gets its own network namespace",
    "initContainers": "remove them; netlab runs only the containers list (istio-init is modelled by the mesh layer)",
    "serviceAccount": "rename it to serviceAccountName (serviceAccount is the deprecated spelling)",
    "hostname": "remove it; the pod name is the hostname",
    "subdomain": "remove it; headless DNS names are not modelled",
}

UNSUPPORTED_CONTAINER = {
    "envFrom": "list each variable under env with a literal value; netlab accepts ConfigMaps and Secrets "
               "but does not serve them to pods",
    "workingDir": "remove it, or cd inside command",
}

UNSUPPORTED_ENV = {
    "valueFrom": "give a literal value: netlab accepts ConfigMaps and Secrets but does not serve them to "
                 "pods, and has no downward API",
}

UNSUPPORTED_STATEFULSET_SPEC = {
    "ordinals": "remove it; pods are named <name>-0, <name>-1, ...",
}

UNSUPPORTED_AFFINITY = {
    "podAffinity": "remove it; netlab places pods by node rules (nodeSelector, node affinity) and "
                   "topologySpreadConstraints",
    "podAntiAffinity": "remove it, or spread replicas with topologySpreadConstraints "
                       "(topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule)",
}

UNSUPPORTED_NODE_AFFINITY = {
    "preferredDuringSchedulingIgnoredDuringExecution":
        "netlab does not score preferences; make the term required, or remove it",
}

UNSUPPORTED_NODE_SELECTOR_TERM = {
    "matchFields": "select nodes by label with matchExpressions (metadata.name is the label "
                   "kubernetes.io/hostname)",
}

UNSUPPORTED_OPERATOR_FIELDS: dict[str, str] = {}

UNSUPPORTED_SPREAD = {
    "minDomains": "remove it; the domains are the eligible nodes' label values",
    "matchLabelKeys": "list the labels in labelSelector.matchLabels instead",
    "nodeAffinityPolicy": "remove it; node affinity and nodeSelector are honoured (the default, Honor)",
    "nodeTaintsPolicy": "remove it; netlab nodes have no taints",
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
        "StatefulSet spec": STATEFULSET_SPEC,
        "ConfigMap, Secret": CONFIG_OBJECT,
        "pod template metadata": POD_TEMPLATE_METADATA,
        "pod spec": POD_SPEC,
        "container": CONTAINER,
        "Service spec": SERVICE_SPEC,
        "Service port": SERVICE_PORT,
    }
