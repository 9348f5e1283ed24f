#!/usr/bin/env bash
# Issue 14, part 4: what a cluster operator applies (deploy/), checked with tools nobody here
# wrote. kubernetes-validate --strict checks every manifest of deploy/install/ and the vendored
# Gateway API CRDs against Kubernetes' own schemas, and the whole install as kustomize renders it
# (`kubectl kustomize deploy/`); the vendored CRDs are checked to be upstream's bytes; the
# Gateway API routes of examples/ (and .ci/routes/) are checked against upstream's
# HTTPRoute/GRPCRoute schemas with check-jsonschema, meshwork's deviations named and checked to
# be exactly what upstream refuses (.ci/gateway_routes.py). That the RBAC rules are what the
# control plane needs, and the manifests' flags what the binary has, is a test:
# crates/cli/tests/cli/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

# pip installs as --user where site-packages is not writable: its scripts land here.
PATH="$(python3 -m site --user-base)/bin:$PATH"
export PATH
# Pinned to the versions on the CI machine when pinned (2026-12). gateway_routes.py imports
# jsonschema and yaml, which check-jsonschema and kubernetes-validate bring.
# Installed as .ci/run installs rotel: --user past an externally managed Python, else plainly.
command -v kubernetes-validate >/dev/null && command -v check-jsonschema >/dev/null \
  && python3 -c 'import jsonschema, yaml' 2>/dev/null \
  || python3 -m pip install --quiet --user --break-system-packages \
       kubernetes-validate==1.37.0 check-jsonschema==0.39.0 \
  || python3 -m pip install --quiet kubernetes-validate==1.37.0 check-jsonschema==0.39.0
# kustomize as kubectl embeds it; Debian's kubernetes-client where the machine has no kubectl.
command -v kubectl >/dev/null || { apt-get update -qq && apt-get install -y -qq kubernetes-client; }

shopt -s nullglob
install=(deploy/install/*.yaml)
gateway=(deploy/gateway-api/*/*.yaml)
[ "${#install[@]}" -ge 4 ] || { echo "deploy: expected the install manifests in deploy/install, found ${#install[@]}" >&2; exit 1; }
[ "${#gateway[@]}" -eq 4 ] || { echo "deploy: expected 4 vendored Gateway API CRDs, found ${#gateway[@]}" >&2; exit 1; }
kubernetes-validate --strict "${install[@]}" "${gateway[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
kubectl kustomize deploy/ > "$work/install.yaml"
kubernetes-validate --strict "$work/install.yaml"

(cd deploy/gateway-api && sha256sum --check --quiet SHA256SUMS) \
  || { echo "deploy: deploy/gateway-api/ differs from upstream's release (SHA256SUMS)" >&2; exit 1; }

# The GRPCRoute fixture is one meshwork accepts: added to a copy of the example, it validates.
cp -r examples/store-billing "$work/store-billing"
cp .ci/routes/grpcroute.yaml "$work/store-billing/"
cargo run --quiet -p meshwork-cli -- validate "$work/store-billing" > "$work/validate.out" \
  || { cat "$work/validate.out"; exit 1; }
grep -q 'GRPCRoute/billing-grpc' "$work/validate.out" \
  || { echo "deploy: meshwork validate did not load .ci/routes/grpcroute.yaml" >&2; exit 1; }

python3 .ci/gateway_routes.py "$work/schemas" "$work/routes" examples/*/*.yaml .ci/routes/*.yaml
status=0
for dir in "$work"/routes/*/; do
  name=$(basename "$dir")
  check-jsonschema --schemafile "$work/schemas/$name.json" "$dir"*.json || status=1
done
exit "$status"
