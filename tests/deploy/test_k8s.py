"""deploy/k8s: the kustomize overlays render, validate offline (strict built-in schemas, vendored CRD schemas),
pass checkov except for the justified skips, and say what the deploy guide promises (probes, drain, security)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import (
    DEPLOY,
    KUBERNETES_VERSION,
    assert_only_skipped,
    load_skips,
    run_checkov,
    system_tool,
    tool,
)

OVERLAYS = ("cpu", "gpu", "ray")
VALIDATOR = Path(__file__).with_name("validate_manifests.py")
CRDS = DEPLOY / "k8s" / "crds"
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each overlay rendered once by `kubectl kustomize` into its own file."""
    kubectl = system_tool("kubectl")
    out = tmp_path_factory.mktemp("rendered")
    files = {}
    for overlay in OVERLAYS:
        done = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"kubectl kustomize overlays/{overlay} failed: {done.stderr}"
        files[overlay] = out / f"{overlay}.yaml"
        files[overlay].write_text(done.stdout, encoding="utf-8")
    return files


def docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def find(objects: list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in objects if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_specs(objects: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(owner, pod spec) for every workload, RayService groups included."""
    for d in objects:
        name = f"{d['kind']}/{d['metadata']['name']}"
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            yield name, spec["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield name, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif d["kind"] == "RayService":
            cluster = spec["rayClusterConfig"]
            yield f"{name}/head", cluster["headGroupSpec"]["template"]["spec"]
            for group in cluster.get("workerGroupSpecs", []):
                yield f"{name}/{group['groupName']}", group["template"]["spec"]


def validate(*files: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [tool("python"), str(VALIDATOR), KUBERNETES_VERSION, str(CRDS), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_into_the_chorus_namespace(rendered: dict[str, Path], overlay: str) -> None:
    objects = docs(rendered[overlay])
    kinds = {d["kind"] for d in objects}
    assert {"Deployment", "ConfigMap", "Secret", "NetworkPolicy", "PriorityClass", "ScaledObject"} <= kinds
    for d in objects:
        if d["kind"] not in ("Namespace", "PriorityClass"):
            assert d["metadata"].get("namespace") == "chorus", f"{d['kind']}/{d['metadata']['name']}"


def test_every_object_validates_offline(rendered: dict[str, Path]) -> None:
    results = validate(*rendered.values())
    errors = [f"{r['file']}: {r['kind']}/{r['name']}: {r['error']}" for r in results if r["error"]]
    assert not errors, "\n".join(errors)
    by_validator = {r["kind"]: r["validator"] for r in results}
    assert by_validator["Deployment"] == "kubernetes"
    assert by_validator["ScaledObject"] == by_validator["RayService"] == by_validator["TriggerAuthentication"] == "crd"


def test_broken_objects_fail_validation(tmp_path: Path) -> None:
    """The validators do reject: a field Kubernetes does not know, a ScaledObject and a RayService that break
    their CRD's schema, and a kind with no schema at all."""
    broken = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "unknown-field"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "readinessProbes": {}}]},
                },
            },
        },
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {"name": "no-target"},
            "spec": {"minReplicaCount": "two", "triggers": [{"type": "prometheus", "metadata": {}}]},
        },
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {"name": "no-head"},
            "spec": {"rayClusterConfig": {"workerGroupSpecs": [{"groupName": "gpu"}]}},
        },
        {"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "no-schema"}},
    ]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(broken), encoding="utf-8")
    results = {r["name"]: r["error"] for r in validate(path)}
    assert "readinessProbes" in results["unknown-field"]
    assert "scaleTargetRef" in results["no-target"] and "'two'" in results["no-target"]
    assert "headGroupSpec" in results["no-head"]
    assert "no schema" in results["no-schema"]


@pytest.fixture(scope="module")
def checkov_failures(rendered: dict[str, Path]) -> list[Any]:
    return run_checkov("kubernetes", directory=next(iter(rendered.values())).parent)


def test_checkov_fails_only_justified_checks(checkov_failures: list[Any]) -> None:
    assert_only_skipped(checkov_failures, "kubernetes")


def test_every_checkov_skip_is_justified() -> None:
    for skip in load_skips():
        assert skip["framework"] in ("kubernetes", "dockerfile", "terraform"), skip
        assert skip["id"].startswith(("CKV_", "CKV2_")), skip
        assert isinstance(skip["resources"], list) and skip["resources"], skip
        why = skip.get("why")
        assert isinstance(why, str) and len(why.strip()) >= 20 and "\n" not in why, f"{skip['id']}: {why!r}"


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_server_probes_and_drain(rendered: dict[str, Path], overlay: str) -> None:
    objects = docs(rendered[overlay])
    pod = find(objects, "Deployment", "chorus")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    config_map = next(
        d for d in objects if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("chorus-config")
    )
    config = yaml.safe_load(config_map["data"]["chorus.yaml"])
    assert config["server"]["host"] == "0.0.0.0" and config["auth"]["mode"] == "required"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config["server"]["drain_timeout_s"]
    assert pod["priorityClassName"] == "chorus-realtime"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_locked_down(rendered: dict[str, Path], overlay: str) -> None:
    for owner, pod in pod_specs(docs(rendered[overlay])):
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", owner
        assert pod.get("automountServiceAccountToken") is False, owner
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            where = f"{owner}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "limits" in c["resources"] and "requests" in c["resources"], where
            if c["name"] == "own-cache-dir":  # the one root step: chown the hostPath, CAP_CHOWN only
                assert sc["capabilities"]["add"] == ["CHOWN"], where
            else:
                assert sc["runAsNonRoot"] is True and "add" not in sc["capabilities"], where


def test_gpu_overlay_uses_gpus_and_the_read_only_model_cache(rendered: dict[str, Path]) -> None:
    objects = docs(rendered["gpu"])
    for name in ("chorus", "chorus-finetune"):
        pod = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1", name
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]), name
        mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/models"]["readOnly"] is True, name
        volume = next(v for v in pod["volumes"] if v["name"] == mounts["/models"]["name"])
        assert volume["hostPath"]["path"] == "/var/lib/chorus/models", name
        assert pod["initContainers"][0]["name"] == "wait-for-model", name
    config_map = next(
        d for d in objects if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("chorus-config")
    )
    model = yaml.safe_load(config_map["data"]["chorus.yaml"])["model"]
    cache = find(objects, "ConfigMap", "chorus-model-cache")["data"]
    assert model == {**model, "name": "qwen3", "device": "cuda", "local_path": f"/models/{cache['MODEL_NAME']}"}
    terms = find(objects, "Deployment", "chorus")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    keys = {
        e["key"]
        for e in terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    }
    assert keys == {"chorus/pool", "chorus/accelerator"}
    assert find(objects, "DaemonSet", "chorus-model-cache")["spec"]["template"]["spec"]["nodeSelector"] == {
        "chorus/accelerator": "nvidia"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_finetune_workers_are_preemptible_batch(rendered: dict[str, Path], overlay: str) -> None:
    objects = docs(rendered[overlay])
    pod = find(objects, "Deployment", "chorus-finetune")["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"][:3] == ["worker", "--queue", "finetune"]
    assert pod["priorityClassName"] == "chorus-finetune"
    assert pod["nodeSelector"]["chorus/pool"] == "batch"
    assert any(t["key"] == "chorus/spot" for t in pod["tolerations"])
    assert find(objects, "PriorityClass", "chorus-finetune")["preemptionPolicy"] == "Never"


def test_keda_scales_on_queue_depth_not_cpu(rendered: dict[str, Path]) -> None:
    objects = docs(rendered["cpu"])
    server = find(objects, "ScaledObject", "chorus")["spec"]
    assert server["scaleTargetRef"]["name"] == "chorus"
    assert {t["type"] for t in server["triggers"]} == {"prometheus"}
    queries = " ".join(t["metadata"]["query"] for t in server["triggers"])
    assert "chorus_queue_depth" in queries and "chorus_running_slots" in queries and "cpu" not in queries
    worker = find(objects, "ScaledObject", "chorus-finetune")["spec"]
    assert worker["scaleTargetRef"]["name"] == "chorus-finetune" and worker["minReplicaCount"] == 0
    assert "fine_tunes" in worker["triggers"][0]["metadata"]["query"]


def test_network_policy_admits_the_api_from_the_ingress_and_metrics_from_prometheus(
    rendered: dict[str, Path],
) -> None:
    objects = docs(rendered["cpu"])
    assert find(objects, "NetworkPolicy", "default-deny")["spec"]["podSelector"] == {}
    ingress = find(objects, "NetworkPolicy", "chorus-server-ingress")["spec"]["ingress"]
    sources = [
        (rule["from"][0]["namespaceSelector"]["matchLabels"], [p["port"] for p in rule["ports"]]) for rule in ingress
    ]
    assert [(labels["kubernetes.io/metadata.name"], ports) for labels, ports in sources] == [
        ("ingress-nginx", [8000]),
        ("monitoring", [9100]),
    ]
    server = find(objects, "Deployment", "chorus")["spec"]["template"]
    assert server["metadata"]["annotations"]["prometheus.io/port"] == "9100"
    ports = {p["name"]: p["containerPort"] for p in server["spec"]["containers"][0]["ports"]}
    assert ports == {"http": 8000, "metrics": 9100}
    config_map = next(
        d for d in objects if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("chorus-config")
    )
    assert yaml.safe_load(config_map["data"]["chorus.yaml"])["server"]["metrics_port"] == 9100
    egress = find(objects, "NetworkPolicy", "chorus-egress")["spec"]["egress"]
    assert sorted(p["port"] for rule in egress for p in rule["ports"]) == [53, 53, 443, 5432]


def test_ray_overlay_replaces_the_deployment_with_a_rayservice(rendered: dict[str, Path]) -> None:
    objects = docs(rendered["ray"])
    kinds = {(d["kind"], d["metadata"]["name"]) for d in objects}
    assert ("Deployment", "chorus") not in kinds and ("ScaledObject", "chorus") not in kinds
    assert ("Deployment", "chorus-finetune") in kinds and ("DaemonSet", "chorus-model-cache") in kinds
    service = find(objects, "RayService", "chorus")["spec"]
    apps = yaml.safe_load(service["serveConfigV2"])["applications"]
    assert [a["import_path"] for a in apps] == ["chorus.deploy.ray_app:app"]
    workers = service["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"mountPath": "/models", "name": "model-cache", "readOnly": True} in workers["volumeMounts"]


def test_example_secrets_hold_only_placeholders() -> None:
    for path in (DEPLOY / "k8s" / "base").glob("*.example.env"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                assert "REPLACE_ME" in value, f"{path.name}: {key} must be a placeholder"
