"""The Helm chart in deploy/helm/hushscribe, rendered by Helm's own library (helm-python-sdk, no
binary, no cluster) and checked three ways: every object against the Kubernetes 1.30 schemas
(kubernetes-validate, strict: an unknown field fails), the security and wiring properties object
by object, and the rendered hushscribe.toml plus the pods' environment loaded by hushscribe's own
Settings, so that every directory lands on the volume meant for it."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import textwrap
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from hushscribe.settings import load_settings

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "hushscribe"
KUBE_VERSION = "1.30"
DB_URL = "postgresql+psycopg://hushscribe:s3cret@10.20.0.5:5433/hushscribe"
POD_CIDR = "10.244.0.0/16"
REGISTRY = "registry.internal.example"

MINIMAL: dict[str, Any] = {"database": {"url": DB_URL}, "probes": {"sourceCIDRs": [POD_CIDR]}}
GPU: dict[str, Any] = {
    **MINIMAL,
    "worker": {
        "gpu": {"enabled": True, "count": 2, "runtimeClassName": "nvidia"},
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        "nodeSelector": {"pool": "speech"},
    },
}
DB_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}},
}
EXISTING_SECRET: dict[str, Any] = {
    "database": {"existingSecret": "pg-credentials", "existingSecretKey": "uri"},
    "secrets": {"existingSecret": "hushscribe-auth"},
    "auditKeys": {"existingSecret": "hushscribe-audit-keys"},
    "probes": {"sourceCIDRs": [POD_CIDR]},
    "networkPolicy": {"egress": {"database": {"peers": [DB_PEER], "ports": [5432]}}},
}
INGRESS_TLS: dict[str, Any] = {
    **MINIMAL,
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "2g"},
        "hosts": [{"host": "stt.corp.example", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "stt-tls", "hosts": ["stt.corp.example"]}],
    },
}
CASES = {"default": MINIMAL, "gpu": GPU, "existing-secret": EXISTING_SECRET, "ingress": INGRESS_TLS}


@pytest.fixture(scope="module")
def chart() -> Any:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every object the chart renders for ``values``, by (kind, name)."""
    manifests = chart.render(values=values, name="stt", namespace="speech", is_install=True)
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects


def of_kind(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for (k, _), o in objects.items() if k == kind]


def pod_specs(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod spec of every workload, by object name."""
    specs = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in of_kind(objects, "Deployment")
    }
    specs |= {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "Pod")}
    specs |= {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in of_kind(objects, "Job")}
    return specs


def container(objects: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = pod_specs(objects)[name]["containers"]
    return found


def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in c["volumeMounts"]}


def render_error(chart: Any, values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as caught:
        chart.render(values=values, name="stt", namespace="speech")
    return str(caught.value)


# --- every object is valid Kubernetes, and hardened --------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_every_object_validates_against_kubernetes_schemas(chart: Any, case: str) -> None:
    objects = render(chart, CASES[case])
    assert len(objects) >= 10
    for (kind, name), obj in objects.items():
        version = kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        assert version == KUBE_VERSION, (kind, name)
        assert obj["metadata"].get("namespace", "speech") == "speech"


def test_a_wrong_field_fails_the_kubernetes_schema(chart: Any) -> None:
    """The validator is not a formality: one misspelt field in a rendered Deployment fails."""
    objects = render(chart, MINIMAL)
    deployment = objects[("Deployment", "stt-hushscribe-api")]
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_default_values_render_exactly_the_expected_objects(chart: Any) -> None:
    kinds = Counter(kind for kind, _ in render(chart, MINIMAL))
    assert kinds == {
        "Deployment": 2,
        "Service": 1,
        "ConfigMap": 1,
        "Secret": 2,  # the release's, and the db-upgrade hook's
        "Job": 1,
        "ServiceAccount": 1,
        "PersistentVolumeClaim": 2,
        "NetworkPolicy": 2,
        "PodDisruptionBudget": 2,
    }


@pytest.mark.parametrize("case", CASES)
def test_every_pod_runs_non_root_read_only_without_privileges(chart: Any, case: str) -> None:
    objects = render(chart, {**CASES[case], "modelsImport": {"enabled": True}})
    specs = pod_specs(objects)
    assert set(specs) == {
        "stt-hushscribe-api",
        "stt-hushscribe-worker",
        "stt-hushscribe-models-import",
        "stt-hushscribe-db-upgrade",
    }
    for name, spec in specs.items():
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert (pod_sc["runAsUser"], pod_sc["fsGroup"]) == (10001, 10001), name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["enableServiceLinks"] is False, name
        assert "hostNetwork" not in spec and "hostPID" not in spec, name
        tmp = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], name
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["privileged"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert c["image"].startswith(f"{REGISTRY}/hushscribe/hushscribe"), where
        for c in spec["containers"]:
            assert mounts(c)["/tmp"]["name"] == "tmp", name
    (account,) = of_kind(objects, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


def test_run_as_root_is_refused_by_the_values_schema(chart: Any) -> None:
    message = render_error(chart, {**MINIMAL, "securityContext": {"runAsUser": 0}})
    assert "/securityContext/runAsUser" in message and "minimum" in message


# --- what the pods run, and how they are probed ------------------------------------------------
def test_api_and_worker_commands_ports_and_probes(chart: Any) -> None:
    objects = render(chart, {**MINIMAL, "worker": {"health": {"port": 9101}, "processes": 3}})
    api = container(objects, "stt-hushscribe-api")
    assert api["command"][:4] == ["hushscribe", "serve", "--role", "api"]
    assert api["command"][api["command"].index("--port") + 1] == "8000"
    assert api["command"][api["command"].index("--host") + 1] == "0.0.0.0"
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    worker = container(objects, "stt-hushscribe-worker")
    assert worker["command"][:4] == ["hushscribe", "serve", "--role", "worker"]
    assert worker["command"][worker["command"].index("--health-port") + 1] == "9101"
    assert worker["command"][worker["command"].index("--health-host") + 1] == "0.0.0.0"
    assert not {"--host", "--port"} & set(worker["command"])  # `serve --role worker` refuses them
    assert worker["command"][worker["command"].index("--workers") + 1] == "3"
    assert worker["ports"] == [{"name": "health", "containerPort": 9101, "protocol": "TCP"}]
    for c, port in ((api, "http"), (worker, "health")):
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    (service,) = of_kind(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"


def test_image_digest_pins_the_image(chart: Any) -> None:
    digest = "sha256:" + "ab" * 32
    objects = render(chart, {**MINIMAL, "image": {"digest": digest, "tag": "9.9"}})
    for spec in pod_specs(objects).values():
        for c in spec["containers"] + spec.get("initContainers", []):
            assert c["image"] == f"{REGISTRY}/hushscribe/hushscribe@{digest}"


# --- volumes ------------------------------------------------------------------------------------
def test_claims_access_modes_and_mounts(chart: Any) -> None:
    objects = render(chart, {**MINIMAL, "modelsImport": {"enabled": True}})
    data = objects[("PersistentVolumeClaim", "stt-hushscribe-data")]
    models = objects[("PersistentVolumeClaim", "stt-hushscribe-models")]
    assert data["spec"]["accessModes"] == ["ReadWriteMany"]
    assert models["spec"]["accessModes"] == ["ReadOnlyMany"]
    for claim in (data, models):
        assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    for name in ("stt-hushscribe-api", "stt-hushscribe-worker", "stt-hushscribe-models-import"):
        spec = pod_specs(objects)[name]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"data": "stt-hushscribe-data", "models": "stt-hushscribe-models"}
        m = mounts(spec["containers"][0])
        assert m["/var/lib/hushscribe"]["name"] == "data"
        assert m["/var/lib/hushscribe"]["subPath"] == "data"
        assert m["/var/lib/hushscribe/models"]["name"] == "models"
        writable = name.endswith("models-import")
        assert m["/var/lib/hushscribe/models"]["readOnly"] is (not writable), name


def test_existing_claims_are_used_and_not_created(chart: Any) -> None:
    values = {
        **MINIMAL,
        "persistence": {"data": {"existingClaim": "nfs-data"}, "models": {"existingClaim": "m"}},
    }
    objects = render(chart, values)
    assert of_kind(objects, "PersistentVolumeClaim") == []
    volumes = {v["name"]: v for v in pod_specs(objects)["stt-hushscribe-worker"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "nfs-data"}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "m"}


# --- GPU ----------------------------------------------------------------------------------------
def test_gpu_resource_only_with_gpu_values(chart: Any) -> None:
    plain = render(chart, MINIMAL)
    assert "nvidia.com/gpu" not in json.dumps(list(plain.values()))
    objects = render(chart, GPU)
    worker = container(objects, "stt-hushscribe-worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert worker["resources"]["limits"]["memory"] == "8Gi"
    spec = pod_specs(objects)["stt-hushscribe-worker"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"pool": "speech"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    api = pod_specs(objects)["stt-hushscribe-api"]
    assert "nvidia.com/gpu" not in json.dumps(api)


# --- autoscaling --------------------------------------------------------------------------------
def test_hpa_scales_the_worker_deployment_on_queue_depth(chart: Any) -> None:
    assert of_kind(render(chart, MINIMAL), "HorizontalPodAutoscaler") == []
    objects = render(chart, GPU)
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    worker = objects[("Deployment", "stt-hushscribe-worker")]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": worker["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "hushscribe_queue_depth"
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    assert "replicas" not in worker["spec"]  # the HPA owns the count; an upgrade must not reset it


def test_hpa_with_max_below_min_fails(chart: Any) -> None:
    values = {**MINIMAL, "worker": {"autoscaling": {"enabled": True, "minReplicas": 5}}}
    values["worker"]["autoscaling"]["maxReplicas"] = 2
    assert "maxReplicas is smaller than" in render_error(chart, values)


def test_pod_disruption_budgets_cover_each_deployment(chart: Any) -> None:
    objects = render(chart, MINIMAL)
    for component in ("api", "worker"):
        pdb = objects[("PodDisruptionBudget", f"stt-hushscribe-{component}")]
        deployment = objects[("Deployment", f"stt-hushscribe-{component}")]
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
        assert pdb["spec"]["maxUnavailable"] == 1


# --- network policy -----------------------------------------------------------------------------
def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def policy(objects: dict[tuple[str, str], dict[str, Any]], component: str) -> dict[str, Any]:
    spec: dict[str, Any] = objects[("NetworkPolicy", f"stt-hushscribe-{component}")]["spec"]
    return spec


def test_network_policy_egress_is_exactly_the_database(chart: Any) -> None:
    objects = render(chart, MINIMAL)
    database = [{"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": tcp(5433)}]
    for component in ("api", "worker"):
        spec = policy(objects, component)
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["egress"] == database, component
    assert policy(objects, "worker")["ingress"] == []
    (api_ingress,) = policy(objects, "api")["ingress"]
    assert api_ingress["ports"] == tcp(8000)
    assert api_ingress["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
        }
    ]
    worker_selector = policy(objects, "worker")["podSelector"]["matchExpressions"]
    assert worker_selector[0]["values"] == ["worker", "models-import", "db-upgrade"]


def test_network_policy_adds_ldap_and_syslog_from_the_settings_and_nothing_else(
    chart: Any,
) -> None:
    values = {
        **MINIMAL,
        "config": {
            "auth": {"ldap": {"url": "ldaps://10.9.0.4", "user_base": "ou=people,dc=corp"}},
            "audit": {"syslog": {"host": "logs.corp.example", "port": 1514}},
        },
        "networkPolicy": {
            "ingress": {"from": [], "cidrs": ["192.168.10.0/24"]},
            "egress": {"syslog": {"cidrs": ["10.30.0.0/24"]}},
        },
    }
    objects = render(chart, values)
    database = {"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": tcp(5433)}
    ldap = {"to": [{"ipBlock": {"cidr": "10.9.0.4/32"}}], "ports": tcp(636)}
    syslog = {"to": [{"ipBlock": {"cidr": "10.30.0.0/24"}}], "ports": tcp(1514)}
    assert policy(objects, "api")["egress"] == [database, ldap, syslog]
    assert policy(objects, "worker")["egress"] == [database, syslog]  # workers sign nobody in
    assert policy(objects, "api")["ingress"] == [
        {"from": [{"ipBlock": {"cidr": "192.168.10.0/24"}}], "ports": tcp(8000)}
    ]
    with_dns = {
        **values,
        "networkPolicy": {
            **values["networkPolicy"],
            "egress": {"syslog": {"cidrs": ["10.30.0.0/24"]}, "dns": {"enabled": True}},
        },
    }
    dns = render(chart, with_dns)
    last = policy(dns, "api")["egress"][-1]
    assert last["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_network_policy_with_no_ingress_peers_denies_all_ingress(chart: Any) -> None:
    objects = render(chart, {**MINIMAL, "networkPolicy": {"ingress": {"from": []}}})
    assert policy(objects, "api")["ingress"] == []  # not a rule with no `from` (= everyone)


def test_network_policy_needs_an_endpoint_it_cannot_derive(chart: Any) -> None:
    by_name = {**MINIMAL, "database": {"url": "postgresql+psycopg://hs:pw@pg.corp.example/hs"}}
    assert "networkPolicy.egress.database: name where the database is" in render_error(
        chart, by_name
    )
    ldap = {"url": "ldaps://dc.corp.example", "user_base": "dc=corp"}
    ldap_by_name = {**MINIMAL, "config": {"auth": {"ldap": ldap}}}
    assert "networkPolicy.egress.ldap" in render_error(chart, ldap_by_name)
    off = render(chart, {**by_name, "networkPolicy": {"enabled": False}})
    assert of_kind(off, "NetworkPolicy") == []


# --- secrets ------------------------------------------------------------------------------------
def secret_ref(c: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [e for e in c["env"] if e["name"] == name]
    ref: dict[str, Any] = entry["valueFrom"]["secretKeyRef"]
    return ref


def test_database_url_lives_in_the_secret_only(chart: Any) -> None:
    objects = render(chart, MINIMAL)
    secret = objects[("Secret", "stt-hushscribe")]
    assert base64.b64decode(secret["data"]["database-url"]).decode() == DB_URL
    others = {k: v for k, v in objects.items() if k[0] != "Secret"}
    assert "s3cret" not in json.dumps(list(others.values()))
    for name in ("stt-hushscribe-api", "stt-hushscribe-worker"):
        ref = secret_ref(container(objects, name), "HUSHSCRIBE_DATABASE_URL")
        assert ref == {"name": secret["metadata"]["name"], "key": "database-url"}


def test_existing_secrets_are_referenced_and_nothing_is_rendered_for_them(chart: Any) -> None:
    objects = render(chart, EXISTING_SECRET)
    assert of_kind(objects, "Secret") == []
    api = container(objects, "stt-hushscribe-api")
    assert secret_ref(api, "HUSHSCRIBE_DATABASE_URL") == {"name": "pg-credentials", "key": "uri"}
    assert secret_ref(api, "HUSHSCRIBE_AUTH__API_KEYS") == {
        "name": "hushscribe-auth",
        "key": "api-keys",
        "optional": True,
    }
    worker = container(objects, "stt-hushscribe-worker")
    auth_only = {"HUSHSCRIBE_AUTH__API_KEYS", "HUSHSCRIBE_ADMIN_PASSWORD"}
    assert {e["name"] for e in worker["env"]} & auth_only == set()
    assert policy(objects, "api")["egress"] == [{"to": [DB_PEER], "ports": tcp(5432)}]
    # The audit keys: copied by the init container from the Secret into memory.
    spec = pod_specs(objects)["stt-hushscribe-worker"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["audit-keys-source"]["secret"]["secretName"] == "hushscribe-audit-keys"
    assert volumes["audit-keys"]["emptyDir"]["medium"] == "Memory"
    (init,) = spec["initContainers"]
    assert init["command"][-2:] == ["/run/secrets/hushscribe-audit-keys", "/run/hushscribe/keys"]
    assert "/run/secrets/hushscribe-audit-keys" not in mounts(spec["containers"][0])


def test_missing_or_wrong_database_url_fails_rendering(chart: Any) -> None:
    message = render_error(chart, {"probes": {"sourceCIDRs": [POD_CIDR]}})
    assert "database.url is required" in message and "database.existingSecret" in message
    sqlite = {**MINIMAL, "database": {"url": "sqlite:////var/lib/hushscribe/hushscribe.db"}}
    assert "must be a PostgreSQL URL" in render_error(chart, sqlite)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"probes": {"sourceCIDRs": []}}, "probes.sourceCIDRs is required"),
        ({"config": {"data_dir": "/srv"}}, "config.data_dir is set by the chart"),
        ({"config": {"server": {"port": 9000}}}, "config.server.port is set by the chart"),
        ({"config": {"auth": {"api_keys": {"ci": "k" * 40}}}}, "move them to secrets.apiKeys"),
        ({"config": {"audit": {"keys_dir": "/k"}}}, "config.audit.keys_dir is set by the chart"),
    ],
)
def test_values_that_cannot_work_fail_rendering(
    chart: Any, values: dict[str, Any], expected: str
) -> None:
    assert expected in render_error(chart, {**MINIMAL, **values})


# --- ingress ------------------------------------------------------------------------------------
def test_ingress_with_tls_routes_to_the_api_service(chart: Any) -> None:
    assert of_kind(render(chart, MINIMAL), "Ingress") == []
    objects = render(chart, INGRESS_TLS)
    (ingress,) = of_kind(objects, "Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"secretName": "stt-tls", "hosts": ["stt.corp.example"]}]
    (rule,) = spec["rules"]
    assert rule["host"] == "stt.corp.example"
    (path,) = rule["http"]["paths"]
    (service,) = of_kind(objects, "Service")
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": service["spec"]["ports"][0]["name"]},
    }
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "2g"
    message = render_error(chart, {**INGRESS_TLS, "ingress": {"enabled": True, "tls": [{}]}})
    assert "/ingress/tls/0" in message and "secretName" in message


# --- the settings the pods get, read by hushscribe itself --------------------------------------
def settings_of(
    objects: dict[tuple[str, str], dict[str, Any]],
    name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    existing: dict[str, dict[str, str]] | None = None,
) -> Any:
    """hushscribe's Settings as the pod ``name`` would load them: its environment (secret
    references resolved from the rendered Secret or ``existing``) and the mounted ConfigMap."""
    spec = pod_specs(objects)[name]
    c = spec["containers"][0]
    secrets_by_name = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in of_kind(objects, "Secret")
    } | (existing or {})
    for var in [v for v in os.environ if v.startswith("HUSHSCRIBE_")]:
        monkeypatch.delenv(var)
    env: dict[str, str] = {}
    for entry in c["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secrets_by_name[ref["name"]].get(ref["key"])
            if value is not None or not ref.get("optional"):
                env[entry["name"]] = secrets_by_name[ref["name"]][ref["key"]]
    # The file HUSHSCRIBE_CONFIG names is the ConfigMap's key, through the config volume.
    config_mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert env["HUSHSCRIBE_CONFIG"] == f"{config_mount['mountPath']}/hushscribe.toml"
    config_volume = next(v for v in spec["volumes"] if v["name"] == "config")
    configmap = objects[("ConfigMap", config_volume["configMap"]["name"])]
    toml_file = tmp_path / f"{name}.toml"
    toml_file.write_text(configmap["data"]["hushscribe.toml"], encoding="utf-8")
    env["HUSHSCRIBE_CONFIG"] = str(toml_file)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def volume_at(c: dict[str, Any], path: Path) -> dict[str, Any]:
    """The mount that holds ``path`` (the deepest mount path above it)."""
    holders = [m for m in c["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    return max(holders, key=lambda m: len(m["mountPath"]))


def test_hushscribe_reads_the_rendered_config_and_finds_every_directory_on_its_volume(
    chart: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.token_urlsafe(32)
    values = {
        **MINIMAL,
        "secrets": {"apiKeys": {"ci": key}},
        "config": {
            "engine": {"default_model": "accurate", "batched_min_duration_s": None},
            "audio": {"max_bytes": 1073741824, "max_duration_s": 7200.5},
            "jobs": {"keep_audio": True, "queue_max": 512},
            "models": {"aliases": {"accurate": {"models": ["large-v3", "medium"]}}},
            "network": {"allow": ["10.0.0.0/8"], "trusted_proxies": ["10.244.0.0/16"]},
        },
    }
    objects = render(chart, values)
    for name in ("stt-hushscribe-api", "stt-hushscribe-worker"):
        settings = settings_of(objects, name, tmp_path, monkeypatch)
        c = container(objects, name)
        assert settings.db_url == DB_URL
        assert (settings.audio.max_bytes, settings.jobs.queue_max) == (1073741824, 512)
        assert type(settings.audio.max_bytes) is int and settings.audio.max_duration_s == 7200.5
        assert settings.jobs.keep_audio is True
        assert settings.engine.batched_min_duration_s is None
        assert settings.models.aliases["accurate"].models == ["large-v3", "medium"]
        assert [str(n) for n in settings.network.allow] == [
            "10.0.0.0/8",
            POD_CIDR,
            "127.0.0.0/8",
            "::1/128",
        ]
        data = volume_at(c, settings.data_dir)
        assert (data["name"], data["subPath"]) == ("data", "data")
        for shared in (settings.blobs_dir, settings.audit_dir, settings.keys_dir):
            assert volume_at(c, shared)["name"] == "data", shared  # every node sees the same
        models = volume_at(c, settings.models_dir)
        assert (models["name"], models["readOnly"]) == ("models", True)
        api_keys = {k: v.get_secret_value() for k, v in settings.auth.api_keys.items()}
        assert api_keys == ({"ci": key} if name.endswith("api") else {})


def test_audit_keys_from_a_secret_land_in_the_memory_volume(
    chart: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(chart, EXISTING_SECRET)
    existing = {"pg-credentials": {"uri": DB_URL}, "hushscribe-auth": {}}
    settings = settings_of(objects, "stt-hushscribe-api", tmp_path, monkeypatch, existing)
    assert settings.db_url == DB_URL
    assert settings.auth.api_keys == {}
    keys = volume_at(container(objects, "stt-hushscribe-api"), settings.keys_dir)
    assert keys["name"] == "audit-keys"
    assert volume_at(container(objects, "stt-hushscribe-api"), settings.audit_dir)["name"] == "data"


def test_a_setting_hushscribe_does_not_know_is_refused_by_hushscribe(
    chart: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart passes config through; hushscribe's Settings (extra=forbid) is the judge."""
    from hushscribe.errors import ConfigError

    objects = render(chart, {**MINIMAL, "config": {"jobs": {"queue_maxx": 5}}})
    with pytest.raises(ConfigError, match="queue_maxx"):
        settings_of(objects, "stt-hushscribe-worker", tmp_path, monkeypatch)


# --- the init container's script ---------------------------------------------------------------
def run_prepare(*args: str | Path) -> subprocess.CompletedProcess[str]:
    script = CHART / "files" / "prepare.py"
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def test_the_init_container_runs_the_script_the_configmap_carries(chart: Any) -> None:
    objects = render(chart, MINIMAL)
    (configmap,) = of_kind(objects, "ConfigMap")
    assert configmap["data"]["prepare.py"] == (CHART / "files" / "prepare.py").read_text()
    (init,) = pod_specs(objects)["stt-hushscribe-api"]["initContainers"]
    assert init["command"] == ["python3", "/etc/hushscribe/prepare.py", "/volume", "data"]
    assert mounts(init)["/etc/hushscribe"]["name"] == "config"
    assert "subPath" not in mounts(init)["/volume"]  # the volume's root, where `data` is made


def test_prepare_makes_a_private_data_dir_and_copies_the_keys(tmp_path: Path) -> None:
    volume, source, keys = tmp_path / "volume", tmp_path / "secret", tmp_path / "keys"
    for d in (volume, source, keys):
        d.mkdir()
    (source / "audit-hmac.key").write_bytes(b"\x01" * 32)
    (source / "audit-signing.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    done = run_prepare(volume, "data", source, keys)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((volume / "data").stat().st_mode) == 0o700
    assert (volume / "data").stat().st_uid == os.getuid()
    for name in ("audit-hmac.key", "audit-signing.pem"):
        assert (keys / name).read_bytes() == (source / name).read_bytes()
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert run_prepare(volume, "data").returncode == 0  # a restart finds it made


def test_prepare_refuses_an_incomplete_keys_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "secret" / "audit-hmac.key").write_bytes(b"k")
    done = run_prepare(tmp_path, "data", tmp_path / "secret", tmp_path / "keys")
    assert done.returncode == 1
    assert "lacks audit-signing.pem" in done.stderr


# --- the chart as a whole ---------------------------------------------------------------------
def test_helm_lint_finds_nothing_to_fix() -> None:
    report = helm.lint(CHART, MINIMAL, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_notes_tell_how_to_reach_the_service(chart: Any) -> None:
    notes = chart.render(values=INGRESS_TLS, name="stt", namespace="speech")
    text = notes["hushscribe/templates/NOTES.txt"]
    assert "https://stt.corp.example/" in text
    assert "logs deploy/stt-hushscribe-api" in text


def value_keys(text: str) -> list[tuple[str, bool]]:
    """(key, documented) for every key of values.yaml that holds a value: a scalar, a list, or
    a mapping with a comment above it (its entries are then its example, as `resources`);
    a bare mapping (`image:`) is only a section, and its own keys are checked. Documented: the
    line above is a comment."""
    lines = text.splitlines()
    found: list[tuple[str, bool]] = []
    skip_below = -1
    for number, line in enumerate(lines):
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if skip_below >= 0 and indent > skip_below:
            continue
        skip_below = -1
        match = re.match(r"([A-Za-z][\w.-]*):(.*)$", body)
        assert match, f"values.yaml line {number + 1}: {line!r}"
        documented = number > 0 and lines[number - 1].strip().startswith("#")
        nested = not match.group(2).strip()
        if nested and not documented:
            following = next(li for li in lines[number + 1 :] if li.strip())
            if not following.strip().startswith("- "):
                continue  # a section
        found.append((match.group(1), documented))
        if nested:
            skip_below = indent
    return found


def test_every_value_is_documented_and_in_the_schema(chart: Any) -> None:
    keys = value_keys((CHART / "values.yaml").read_text())
    assert len(keys) > 80
    assert [key for key, documented in keys if not documented] == []
    schema = chart.schema

    def check(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            props = node.get("properties", {})
            assert key in props, f"{path}{key} is not in values.schema.json"
            if isinstance(value, dict) and props[key].get("additionalProperties") is False:
                check(value, props[key], f"{path}{key}.")

    check(chart.values, schema, "")


def readme_yaml_blocks() -> list[Any]:
    text = (CHART / "README.md").read_text()
    blocks = re.findall(r"^( *)```yaml\n(.*?)^\1```", text, flags=re.MULTILINE | re.DOTALL)
    return [yaml.safe_load(textwrap.dedent(body)) for _, body in blocks]


def test_the_readme_example_values_render_valid_objects(chart: Any) -> None:
    (example,) = [b for b in readme_yaml_blocks() if isinstance(b, dict) and "database" in b]
    objects = render(chart, example)
    for obj in objects.values():
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert policy(objects, "api")["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}], "ports": tcp(5432)}
    ]
    worker = container(objects, "stt-hushscribe-worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_readme_adapter_rule_serves_the_metric_the_hpa_reads(chart: Any) -> None:
    (adapter,) = [b for b in readme_yaml_blocks() if isinstance(b, dict) and "externalRules" in b]
    (rule,) = adapter["externalRules"]
    (hpa,) = of_kind(render(chart, GPU), "HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    assert rule["name"]["as"] == metric
    assert rule["seriesQuery"].startswith(f"{metric}{{")
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    assert rule["metricsQuery"].startswith("max(")  # every API pod reports the whole queue


def test_awkward_settings_survive_the_toml_rendering(chart: Any) -> None:
    """Quotes, backslashes, control characters, HTML-ish text and keys that need quoting come
    back from hushscribe.toml exactly as they were given."""
    awkward = 'int8 "<q>" \\ \n\ttab é &'
    aliases = {"fast.v2": {"models": ["small"]}, "with space": {"models": ["x"]}}
    config = {"engine": {"compute_type": awkward}, "models": {"aliases": aliases}}
    objects = render(chart, {**MINIMAL, "config": config})
    (configmap,) = of_kind(objects, "ConfigMap")
    parsed = tomllib.loads(configmap["data"]["hushscribe.toml"])
    assert parsed["engine"]["compute_type"] == awkward
    assert parsed["models"]["aliases"] == aliases
    assert parsed["engine"]["default_model"] == "base"  # Helm merges config with the defaults


def test_db_upgrade_job_runs_before_the_pods_of_each_release(chart: Any) -> None:
    """On PostgreSQL the pods refuse a schema that is behind: a hook upgrades it first, with a
    Secret of its own, since a pre-install hook runs before the release's Secret exists."""
    objects = render(chart, MINIMAL)
    job = objects[("Job", "stt-hushscribe-db-upgrade")]
    hook_secret = objects[("Secret", "stt-hushscribe-db-upgrade")]
    for hook in (job, hook_secret):
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight
    assert base64.b64decode(hook_secret["data"]["database-url"]).decode() == DB_URL
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == "default"  # the chart's does not exist before install
    db_upgrade = container(objects, "stt-hushscribe-db-upgrade")
    assert db_upgrade["command"] == ["hushscribe", "db", "upgrade"]
    ref = secret_ref(db_upgrade, "HUSHSCRIBE_DATABASE_URL")
    assert ref == {"name": "stt-hushscribe-db-upgrade", "key": "database-url"}
    existing = render(chart, EXISTING_SECRET)
    ref = secret_ref(container(existing, "stt-hushscribe-db-upgrade"), "HUSHSCRIBE_DATABASE_URL")
    assert ref == {"name": "pg-credentials", "key": "uri"}
    off = render(chart, {**MINIMAL, "dbUpgrade": {"enabled": False}})
    assert of_kind(off, "Job") == [] and list(off).count(("Secret", "stt-hushscribe")) == 1


def test_object_names_fit_in_a_dns_label_with_a_long_name(chart: Any) -> None:
    values = {
        **MINIMAL,
        "fullnameOverride": "speech-to-text-" * 5,
        "modelsImport": {"enabled": True},
    }
    names = [name for _, name in render(chart, values)]
    assert max(len(n) for n in names) == 63  # "<49 characters>-models-import"
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", n) for n in names)


def test_without_a_models_volume_models_live_on_the_data_volume(
    chart: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render(chart, {**MINIMAL, "persistence": {"models": {"enabled": False}}})
    claims = [o["metadata"]["name"] for o in of_kind(objects, "PersistentVolumeClaim")]
    assert claims == ["stt-hushscribe-data"]
    settings = settings_of(objects, "stt-hushscribe-worker", tmp_path, monkeypatch)
    worker = container(objects, "stt-hushscribe-worker")
    assert volume_at(worker, settings.models_dir)["name"] == "data"
    assert "models" not in {m["name"] for m in worker["volumeMounts"]}
