"""Render a Helm chart with Helm's own Go library and validate every object it produces.

Run by scripts/check-helm inside its virtualenv. For each Kubernetes version and each values
set (the chart's defaults, then every ci/*-values.yaml on top of them), it lints the chart,
renders it as `helm template` would, and validates each object against that version's
OpenAPI schemas in strict mode, so unknown or misplaced fields fail. Exits 1 on any problem,
2 when kubernetes-validate has no schemas for a requested version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml
from helm_python import _native
from kubernetes_validate.utils import (
    SchemaNotFoundError,
    ValidationError,
    all_versions,
    major_minor,
)
from kubernetes_validate.version import __version__ as kubernetes_validate_version
from packaging.version import Version

LINT_WARNING = 2


def render(chart: helm.Chart, values: dict, kube_version: str, namespace: str) -> dict[str, str]:
    # Chart.render() has no kube_version option in 0.2.2 although the C ABI takes one;
    # without it .Capabilities would describe the SDK's own Kubernetes version, not the target.
    opts = {"name": "sightline", "namespace": namespace, "kube_version": f"v{kube_version}.0"}
    return json.loads(
        _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    )


def check(chart_dir: Path, values_name: str, values: dict, kube_version: str) -> tuple[int, int, list[str]]:
    """Returns the number of rendered objects, how many of them are valid, and every problem."""
    problems: list[str] = []
    where = f"{values_name} @ {kube_version}"

    with helm.Chart.load(chart_dir) as chart:
        try:
            manifests = render(chart, values, kube_version, namespace="sightline")
        except helm.HelmError as error:
            return 0, 0, [f"{where}: render failed: {error}"]

    # `helm lint --strict` adds the chart-level checks (Chart.yaml, values, template warnings).
    report = helm.lint(chart_dir, values, strict=True, kube_version=f"v{kube_version}.0")
    for message in report["messages"]:
        if message["severity"] >= LINT_WARNING:
            problems.append(f"{where}: lint {message['path']}: {message['error']}")

    objects = valid = 0
    seen: set[tuple[str, str]] = set()
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as error:
            problems.append(f"{where}: {template}: not YAML: {error}")
            continue
        for document in documents:
            objects += 1
            problem = validate(document, kube_version)
            kind, name = identify(document)
            if problem is None and (kind, name) in seen:
                problem = "rendered twice"
            seen.add((kind, name))
            if problem is None:
                valid += 1
            else:
                problems.append(f"{where}: {template}: {kind}/{name}: {problem}")
    if objects == 0:
        problems.append(f"{where}: rendered no objects")
    problems.extend(f"{where}: {p}" for p in ledger_wiring(all_documents(manifests)))
    return objects, valid, problems


def all_documents(manifests: dict[str, str]) -> list[dict]:
    documents = []
    for template, text in manifests.items():
        if template.endswith("NOTES.txt"):
            continue
        try:
            documents.extend(d for d in yaml.safe_load_all(text) if isinstance(d, dict))
        except yaml.YAMLError:
            pass  # reported by check()
    return documents


def pod_spec(document: dict) -> dict | None:
    spec = document.get("spec") or {}
    if document.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec")


def ledger_wiring(documents: list[dict]) -> list[str]:
    """When etl-metrics is deployed, every batch-enricher and stream-processor container reports
    to its Service: the run ledger is what the daily-run and freshness alerts read."""
    services = {
        (d["metadata"]["name"], port.get("port"))
        for d in documents if d.get("kind") == "Service"
        for port in (d.get("spec") or {}).get("ports") or []
    }
    ledger = {(name, port) for name, port in services if name.endswith("etl-metrics")}
    problems = []
    for document in documents:
        spec = pod_spec(document)
        if spec is None:
            continue
        for container in spec.get("containers") or []:
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            reporter = next((n for n in env if n.startswith(("SIGHTLINE__BATCH__",
                                                             "SIGHTLINE__STREAM__"))), None)
            if reporter is None:
                continue
            section = reporter.split("__")[1]
            endpoint = env.get(f"SIGHTLINE__{section}__LEDGER_ENDPOINT")
            kind, name = identify(document)
            if not ledger:
                continue
            if not endpoint:
                problems.append(f"{kind}/{name}: container {container['name']} does not report "
                                "to etl-metrics (no LEDGER_ENDPOINT)")
                continue
            host_port = endpoint.removeprefix("http://").rstrip("/")
            host, _, port = host_port.partition(":")
            if (host, int(port or 0)) not in ledger:
                problems.append(f"{kind}/{name}: LEDGER_ENDPOINT {endpoint} is not the "
                                f"etl-metrics Service ({sorted(ledger)})")
    return problems


def identify(document: object) -> tuple[str, str]:
    if not isinstance(document, dict):
        return "?", "?"
    metadata = document.get("metadata")
    name = metadata.get("name", "?") if isinstance(metadata, dict) else "?"
    return str(document.get("kind", "?")), str(name)


def validate(document: object, kube_version: str) -> str | None:
    """The reason `document` is not a valid object of the target version, or None."""
    if not isinstance(document, dict) or not {"apiVersion", "kind"} <= document.keys():
        return "not a Kubernetes object"
    try:
        kubernetes_validate.validate(document, kube_version, strict=True)
    except ValidationError as error:
        path = ".".join(str(p) for p in error.path) or "(root)"
        return f"{path}: {error.message}"
    except SchemaNotFoundError as error:
        # A kind without a schema (a CRD, a typo in apiVersion) cannot be checked: a failure
        # here, where kubernetes-validate's own CLI only warns.
        return error.message
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("--kube-version", action="append", required=True,
                        help="major.minor, repeatable")
    args = parser.parse_args()

    known = {major_minor(v) for v in all_versions()}
    for kube_version in args.kube_version:
        if kube_version not in known:
            print(f"kubernetes-validate {kubernetes_validate_version} has no schemas for "
                  f"Kubernetes {kube_version}; it knows {', '.join(sorted(known, key=Version))}",
                  file=sys.stderr)
            return 2

    value_sets = [("defaults", {})]
    for path in sorted((args.chart / "ci").glob("*-values.yaml")):
        # Helm's own YAML reading, as `helm -f` does it.
        value_sets.append((path.name, helm.values_from_yaml(path.read_text())))

    rendered = valid = 0
    failed = False
    for kube_version in args.kube_version:
        for values_name, values in value_sets:
            objects, ok, problems = check(args.chart, values_name, values, kube_version)
            for problem in problems:
                print(problem, file=sys.stderr)
            rendered += objects
            valid += ok
            failed = failed or bool(problems)

    print(f"helm: {rendered} objects rendered, {valid} valid "
          f"({len(value_sets)} values sets x Kubernetes {', '.join(args.kube_version)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
