"""The Kubernetes manifests and the IAM policy say what the code needs, and meet Pod Security "restricted"."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def _objects() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def _one(kind: str, name: str = "simplu-grpc") -> dict[str, Any]:
    matches = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    """Non-root, no privilege escalation, every capability dropped, RuntimeDefault seccomp, no host
    namespaces or hostPath volumes: what the "restricted" level of Pod Security admission requires."""
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    assert not any("hostPath" in volume for volume in pod.get("volumes", []))
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context.get("capabilities", {}).get("add")
        assert context.get("privileged") is not True
        assert context["readOnlyRootFilesystem"] is True


def test_shutdown_fits_the_termination_grace_period() -> None:
    """preStop delay + SHUTDOWN_GRACE_SECONDS + time to close pools fit in terminationGracePeriodSeconds,
    so Kubernetes never kills a pod that is still draining its RPCs."""
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = int(_one("ConfigMap", "simplu-grpc-config")["data"]["SHUTDOWN_GRACE_SECONDS"])
    assert pre_stop >= 5
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + grace + 5


def test_every_referenced_object_is_defined() -> None:
    """Every ConfigMap, Secret and ServiceAccount the Deployment names is one of the manifests (the
    Secret as the example every key of which the deployment reads)."""
    pod = _one("Deployment")["spec"]["template"]["spec"]
    _one("ServiceAccount", pod["serviceAccountName"])
    for source in pod["containers"][0]["envFrom"]:
        if "configMapRef" in source:
            _one("ConfigMap", source["configMapRef"]["name"])
        if "secretRef" in source:
            _one("Secret", source["secretRef"]["name"])
    assert "eks.amazonaws.com/role-arn" in _one("ServiceAccount")["metadata"]["annotations"]


def test_a_headless_service_serves_client_side_balancing() -> None:
    """A headless Service lists every pod for round-robin clients; a PDB and an HPA exist."""
    assert _one("Service", "simplu-grpc-headless")["spec"]["clusterIP"] == "None"
    assert _one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert _one("HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_iam_policy_allows_exactly_the_dynamodb_calls_the_adapter_makes() -> None:
    """The least-privilege policy lists exactly the DynamoDB operations the DynamoDB adapter calls
    (a transaction's Puts need PutItem), so adding a call without its permission fails here."""
    adapter = ROOT / "simplu_grpc" / "adapters" / "dynamodb"
    source = "\n".join(path.read_text() for path in sorted(adapter.glob("*.py")))
    calls = set(re.findall(r"self\._client\.([a-z_]+)\b", source))
    needed = set()
    for call in calls:
        if call == "transact_write_items":
            needed |= {
                f"dynamodb:{op}Item" for op in re.findall(r'"(Put|Update|Delete|ConditionCheck)":', source)
            }
        else:
            needed.add("dynamodb:" + "".join(part.title() for part in call.split("_")))
    policy = json.loads((ROOT / "deploy" / "aws" / "iam-policy.json").read_text())
    allowed = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert allowed == needed


def _exported_names() -> set[str]:
    """Every series name the service exports (counters with _total, histograms with their parts)."""
    from simplu_grpc.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
        }.get(family.type, ())
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_alerts_and_dashboard_query_only_metrics_the_service_exports() -> None:
    """Every simplu_* series an alert or a dashboard panel reads is one the service exports, so a
    renamed metric cannot silently blind them (pool gauges are registered at scrape time)."""
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "simplu-grpc.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bsimplu_[a-z_]+", expr)}
    pool_gauges = {f"simplu_shard_pool_{n}" for n in ("size", "available", "waiting", "max_size")}
    assert used - _exported_names() - pool_gauges == set()
