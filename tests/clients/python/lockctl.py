"""A Dapr application's lock calls through Dapr's Python SDK (gRPC), one step per argument
group, one line per step — for the tests of `latchkey dapr`:

    lock STORE ID OWNER EXPIRY_S   ->  success true | success false
    lock-until STORE ID OWNER EXPIRY_S  ->  the same, trying again until granted (60 s at most)
    unlock STORE ID OWNER          ->  status success | lock_does_not_exist | lock_belongs_to_others

A failed call prints ``error CODE`` (the gRPC status code) and the script goes on. The SDK
finds the endpoint as it finds daprd: DAPR_HTTP_PORT, DAPR_GRPC_PORT, DAPR_API_TOKEN.
"""

import sys
import time
import warnings

import grpc
from dapr.clients import DaprClient

warnings.simplefilter("ignore")  # "The Distributed Lock API is an Alpha version"


def main(args: list[str]) -> None:
    with DaprClient() as client:
        while args:
            step, args = args[0], args[1:]
            try:
                if step == "lock":
                    (store, resource, owner, expiry), args = args[:4], args[4:]
                    taken = client.try_lock(store, resource, owner, expiry_in_seconds=int(expiry))
                    print("success", str(taken.success).lower(), flush=True)
                elif step == "lock-until":
                    (store, resource, owner, expiry), args = args[:4], args[4:]
                    deadline = time.monotonic() + 60
                    while True:
                        taken = client.try_lock(store, resource, owner, expiry_in_seconds=int(expiry))
                        if taken.success or time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                    print("success", str(taken.success).lower(), flush=True)
                elif step == "unlock":
                    (store, resource, owner), args = args[:3], args[3:]
                    print("status", client.unlock(store, resource, owner).status.name, flush=True)
                else:
                    raise SystemExit(f"unknown step {step}")
            except grpc.RpcError as err:
                print("error", err.code().name, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
