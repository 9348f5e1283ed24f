#!/usr/bin/env bash
# Issue 14: the CRDs in deploy/crds/ and every example resource checked with tools nobody here
# wrote. kubernetes-validate checks each CRD against Kubernetes' own CustomResourceDefinition
# schema; check-jsonschema checks every resource document of examples/ against the JSON Schema
# `meshwork crds --json-schema` extracts from its kind's CRD. (That deploy/crds/ is what the
# code generates is a test: crates/cli/tests/cli/crds.rs.) Fails loudly on anything unchecked.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v kubernetes-validate >/dev/null && command -v check-jsonschema >/dev/null \
  || python3 -m pip install --quiet kubernetes-validate check-jsonschema

shopt -s nullglob
crds=(deploy/crds/*.yaml)
[ "${#crds[@]}" -ge 10 ] || { echo "crds: expected a CRD per kind in deploy/crds, found ${#crds[@]}" >&2; exit 1; }
kubernetes-validate --strict "${crds[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run --quiet -p meshwork-cli -- crds --json-schema "$work/schemas"

# Split every example file into one file per resource document, grouped by kind: check-jsonschema
# validates one instance per file. A document with a kind that has no schema is an error.
python3 - "$work" examples <<'PY'
import pathlib, sys, yaml
work, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
count = 0
for path in sorted(root.rglob("*.yaml")):
    for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
        if not isinstance(doc, dict) or not ({"apiVersion", "kind", "metadata", "spec"} & doc.keys()):
            continue  # not a resource (policy-tests.yaml); the loader skips these too
        kind = doc.get("kind")
        if not (work / "schemas" / f"{kind}.json").exists():
            sys.exit(f"crds: {path} document {i}: no schema for kind {kind!r}")
        out = work / "docs" / str(kind)
        out.mkdir(parents=True, exist_ok=True)
        name = f"{path.parent.name}--{path.stem}--{i}.json"
        (out / name).write_text(__import__("json").dumps(doc))
        count += 1
if count == 0:
    sys.exit("crds: no resource documents found under examples/")
print(f"crds: {count} resource documents to check")
PY

status=0
for dir in "$work"/docs/*/; do
  kind=$(basename "$dir")
  check-jsonschema --schemafile "$work/schemas/$kind.json" "$dir"*.json || status=1
done
exit "$status"
