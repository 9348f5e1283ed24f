"""Issue 14: the Gateway API routes of examples/ (and .ci/routes/) against upstream's CRDs.

Usage: gateway_routes.py SCHEMA_DIR ROUTE_DIR FILE...

Extracts a strict JSON Schema from each vendored upstream CRD (deploy/gateway-api/, the
`v1` version's openAPIV3Schema, unknown fields refused as the API server's strict field
validation does; CEL rules are not evaluated), writes one JSON file per route document into
ROUTE_DIR/<channel>-<kind>/ with meshwork's known deviations removed, and checks, with the
`jsonschema` library check-jsonschema runs on, that upstream refuses each document exactly at
those deviations: no more (meshwork accepts nothing else upstream refuses) and no less (each one
listed in docs is still refused upstream; if upstream adopts one, this fails and the docs and
this table change). .ci/deploy.sh then runs check-jsonschema on the stripped documents.
"""
import copy
import json
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path("deploy/gateway-api")
CHANNELS = ("standard", "experimental")
PLURAL = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}
# (kind, channel) -> fields of a rule that upstream's schema refuses and meshwork accepts:
# GRPCRoute's timeouts and retry are meshwork extensions (no upstream channel has them);
# HTTPRoute's retry (GEP-1731) is in upstream's experimental channel only.
DEVIATIONS = {
    ("HTTPRoute", "standard"): {"retry"},
    ("HTTPRoute", "experimental"): set(),
    ("GRPCRoute", "standard"): {"timeouts", "retry"},
    ("GRPCRoute", "experimental"): {"timeouts", "retry"},
}
KEEP = ("x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def strict(node):
    """openAPIV3Schema -> JSON Schema: unknown fields refused, Kubernetes extensions mapped."""
    if isinstance(node, list):
        return [strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") or k in KEEP}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.get("type") == "object" and "properties" in out and not preserve:
        out.setdefault("additionalProperties", False)
    return out


def schema(channel, kind):
    path = ROOT / channel / f"gateway.networking.k8s.io_{PLURAL[kind]}.yaml"
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    out = strict(version["schema"]["openAPIV3Schema"])
    out["$schema"] = "http://json-schema.org/draft-07/schema#"
    return out


def refused(validator, doc):
    """The (rule field) names upstream refuses in `doc`, or the error itself if it is another."""
    fields, others = set(), []
    for error in validator.iter_errors(doc):
        path = list(error.absolute_path)
        unexpected = error.validator == "additionalProperties"
        if unexpected and path[:2] == ["spec", "rules"] and len(path) == 3:
            extra = set(error.instance) - set(error.schema.get("properties", {}))
            fields |= extra
        else:
            others.append(f"{'.'.join(map(str, path))}: {error.message}")
    return fields, others


def main(schema_dir, route_dir, files):
    schema_dir, route_dir = pathlib.Path(schema_dir), pathlib.Path(route_dir)
    schema_dir.mkdir(parents=True, exist_ok=True)
    validators = {}
    for channel in CHANNELS:
        for kind in PLURAL:
            s = schema(channel, kind)
            (schema_dir / f"{channel}-{kind}.json").write_text(json.dumps(s))
            validators[kind, channel] = jsonschema.Draft7Validator(s)
    failures, count, seen = [], 0, set()
    for path in map(pathlib.Path, files):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if not isinstance(doc, dict) or doc.get("kind") not in PLURAL:
                continue
            if not str(doc.get("apiVersion", "")).startswith("gateway.networking.k8s.io/"):
                continue
            kind, count = doc["kind"], count + 1
            for channel in CHANNELS:
                allowed = DEVIATIONS[kind, channel]
                fields, others = refused(validators[kind, channel], doc)
                seen |= {(kind, channel, f) for f in fields}
                where = f"{path} document {i} ({kind}), upstream {channel} channel"
                failures += [f"{where}: refuses {o}" for o in others]
                if fields - allowed:
                    failures.append(f"{where}: refuses rule fields {sorted(fields - allowed)}, "
                                    "which are not meshwork's documented deviations")
                stripped = copy.deepcopy(doc)
                for rule in stripped.get("spec", {}).get("rules", []):
                    for field in allowed:
                        rule.pop(field, None)
                out = route_dir / f"{channel}-{kind}"
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{path.parent.name}--{path.stem}--{i}.json").write_text(json.dumps(stripped))
                print(f"gateway-api: {where}: refuses {sorted(fields) or 'nothing'}")
    for (kind, channel), fields in DEVIATIONS.items():
        for field in sorted(fields - {f for (k, c, f) in seen if (k, c) == (kind, channel)}):
            failures.append(f"no route document uses {kind} rules[].{field}, or upstream's "
                            f"{channel} channel now accepts it: update DEVIATIONS and the docs")
    if count == 0:
        failures.append("no HTTPRoute or GRPCRoute documents found")
    for failure in failures:
        print(f"gateway-api: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
