"""A gRPC C-core Workload API client (grpcio), run by grpc_core.rs.

argv: SOCKET STUBS_DIR. Stubs are generated from crates/api/proto/workload.proto with
grpcio-tools at test time. For both target spellings C-core accepts for a unix socket it
opens a channel and makes every call on that one connection, so the later requests'
HEADERS reference entries (:authority among them) in the client's HPACK dynamic table.
Prints one JSON object; a failed RPC exits 1 with its status on stderr.
"""
import json
import sys

import grpc

sock, stubs = sys.argv[1], sys.argv[2]
sys.path.insert(0, stubs)
import workload_pb2 as pb  # noqa: E402
import workload_pb2_grpc as rpc  # noqa: E402

HEADER = (("workload.spiffe.io", "true"),)
TIMEOUT = 60

result = {}
for target in (f"unix:{sock}", f"unix://{sock}"):
    with grpc.insecure_channel(target) as channel:
        stub = rpc.SpiffeWorkloadAPIStub(channel)
        try:
            x509 = next(stub.FetchX509SVID(pb.X509SVIDRequest(), metadata=HEADER, timeout=TIMEOUT))
            bundles = next(
                stub.FetchJWTBundles(pb.JWTBundlesRequest(), metadata=HEADER, timeout=TIMEOUT)
            )
            jwt = stub.FetchJWTSVID(
                pb.JWTSVIDRequest(audience=["billing"]), metadata=HEADER, timeout=TIMEOUT
            )
            valid = stub.ValidateJWTSVID(
                pb.ValidateJWTSVIDRequest(audience="billing", svid=jwt.svids[0].svid),
                metadata=HEADER,
                timeout=TIMEOUT,
            )
            unheaded = None
            try:
                stub.FetchJWTSVID(pb.JWTSVIDRequest(audience=["billing"]), timeout=TIMEOUT)
            except grpc.RpcError as e:
                unheaded = e.code().name
        except grpc.RpcError as e:
            print(f"{target}: {e.code().name}: {e.details()}", file=sys.stderr)
            sys.exit(1)
        result[target] = {
            "x509_svids": [s.spiffe_id for s in x509.svids],
            "x509_has_key": all(len(s.x509_svid_key) > 0 for s in x509.svids),
            "jwt_bundles": {td: len(json.loads(jwks)["keys"]) for td, jwks in bundles.bundles.items()},
            "jwt_svid": jwt.svids[0].spiffe_id,
            "validated": valid.spiffe_id,
            "without_security_header": unheaded,
        }
print(json.dumps(result))
