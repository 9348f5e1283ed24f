#!/usr/bin/env bash
# OSB v2.17 conformance: schemathesis against the official OpenAPI document (plus the
# overlay that adds the spec-mandated status codes it omits), with our catalog's ids.
#
#   crates/broker/conformance/run.sh            # from anywhere; exits non-zero on failures
#
# Env: SHARED_DIR (default: <repo>/../shared), BROKER_BIN (the `meshwork` binary; default: built
# here), ST_ARGS (extra schemathesis arguments).
# Runs `meshwork broker` with the built-in demo taxonomy (credentials through the environment,
# never argv). The broker provisions for real on the local servers; everything it created is
# deprovisioned afterwards (`meshwork broker purge`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
shared="${SHARED_DIR:-$repo/../shared}"
work="$(mktemp -d)"
user=conformance
pass="$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
pid=""  # the broker process

cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    if [ -f "$work/broker.redb" ]; then
        "$bin" broker purge --state "$work/broker.redb" >/dev/null || echo "run.sh: purge failed; see $work" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

[ -f "$shared/osb/openapi-v2.17.yaml" ] || { echo "run.sh: no $shared/osb/openapi-v2.17.yaml (set SHARED_DIR)" >&2; exit 2; }
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet PyYAML
command -v st >/dev/null 2>&1 || python3 -m pip install --quiet 'schemathesis>=4,<5'

python3 "$shared/osb/osb_openapi_overlay.py" "$shared/osb/openapi-v2.17.yaml" "$work/osb-local.yaml"

if [ -n "${BROKER_BIN:-}" ]; then
    bin="$BROKER_BIN"
else
    (cd "$repo" && cargo build --quiet -p meshwork-cli)
    bin="${CARGO_TARGET_DIR:-$repo/target}/debug/meshwork"
fi

MESHWORK_BROKER_USERNAME="$user" MESHWORK_BROKER_PASSWORD="$pass" \
    "$bin" broker --listen 127.0.0.1:0 --state "$work/broker.redb" \
    >"$work/broker.out" 2>"$work/broker.err" &
pid=$!
url=""
for _ in $(seq 1 300); do
    url="$(sed -n 's/^listening on //p' "$work/broker.out")"
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/broker.err" >&2; exit 2; }
    sleep 0.1
done
[ -n "$url" ] || { echo "run.sh: broker did not start" >&2; exit 2; }

# Instances the config's instance_ids dictionary names (dev environment: no context).
declare -A services=(
    [postgresql]="630422b7-d737-5f0b-b752-ebec1739d9bd e5af094e-a2f8-5137-a9d2-22e3bb56ff27"
    [mysql]="8d85fc2c-7f33-5915-a64f-012a12b39f2e a124d885-dc9d-519c-b3a1-128b6b450e73"
    [redis]="e55844d0-0e48-5f9a-aa3e-ba04850d5d4a 9925799f-b8ee-521f-a82a-94bb39ff3537"
)
for class in "${!services[@]}"; do
    read -r sid plan <<<"${services[$class]}"
    code="$(curl -s -o "$work/seed.json" -w '%{http_code}' -u "$user:$pass" -H 'X-Broker-API-Version: 2.17' -H 'Content-Type: application/json' \
        -X PUT "$url/v2/service_instances/conformance-$class" \
        -d "{\"service_id\":\"$sid\",\"plan_id\":\"$plan\",\"organization_guid\":\"o\",\"space_guid\":\"s\"}")"
    [ "$code" = 201 ] || { echo "run.sh: seeding $class answered $code: $(cat "$work/seed.json")" >&2; exit 2; }
done

status=0
# shellcheck disable=SC2086
st --config-file "$here/schemathesis.toml" run "$work/osb-local.yaml" --url "$url" \
    -a "$user:$pass" -n 50 --seed 1 ${ST_ARGS:-} || status=$?
if [ "$status" -ne 0 ]; then
    echo "run.sh: schemathesis reported failures (exit $status); broker log:" >&2
    tail -n 50 "$work/broker.err" >&2
fi
exit "$status"
