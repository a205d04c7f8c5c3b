"""A scripted lock client, the Python twin of ``guest/demos/src/bin/lockctl.rs``: the same
steps, the same one line of output per step, so that tests drive every language alike.

Steps (locks are kept in a stack; ``extend`` and ``unlock`` act on the top):
``open NAME``, ``try ID LEASE_MS``, ``lock ID LEASE_MS WAIT_MS``, ``extend LEASE_MS``,
``unlock``, ``swap``, ``sleep MS``. Times may be any float (``nan``, ``inf``, ``-5000``).
A failed step prints ``error KIND: MESSAGE`` — after checking that the error arrived as the
``latchkey`` exception class of its kind.

And steps that try the SDK's edges: ``try-surrogate LEASE_MS`` and ``try-bytes LEASE_MS``
(a resource id of a lone surrogate, or of bytes), ``open-int`` (a store named by a number),
``closed`` (a store used after its ``with`` block), ``unlocked`` (a lock used after its
unlock).
"""

import sys
import time

import latchkey
from wit_world import exports

CLASSES = {
    "no-such-store": latchkey.NoSuchStoreError,
    "invalid-argument": latchkey.InvalidArgumentError,
    "access-denied": latchkey.AccessDeniedError,
    "limit-exceeded": latchkey.LimitExceededError,
    "unavailable": latchkey.UnavailableError,
}


class Run(exports.Run):
    def run(self) -> None:
        args = iter(sys.argv[1:])
        store = None
        locks = []
        for step in args:
            try:
                if step == "open":
                    name = next(args)
                    store = latchkey.Store.open(name)
                    print(f"opened {name}")
                elif step in ("try", "lock", "try-surrogate", "try-bytes"):
                    resource_id = {"try-surrogate": "\ud800", "try-bytes": b"abc"}.get(step)
                    resource_id = resource_id if resource_id is not None else next(args)
                    lease = float(next(args)) / 1000
                    if step == "lock":
                        lock = store.lock(resource_id, lease, float(next(args)) / 1000)
                    else:
                        lock = store.try_lock(resource_id, lease)
                    if lock is None:
                        print(f"held {resource_id}")
                    else:
                        locks.append(lock)
                        print(f"granted {resource_id} fence={lock.fence}")
                elif step == "extend":
                    print(f"extended {str(locks[-1].extend(float(next(args)) / 1000)).lower()}")
                elif step == "unlock":
                    print(f"unlocked {locks.pop().unlock().value}")
                elif step == "swap":
                    locks[-1], locks[-2] = locks[-2], locks[-1]
                elif step == "open-int":
                    latchkey.Store.open(123)
                elif step == "closed":
                    with latchkey.Store.open("lockstore") as closed:
                        pass
                    closed.try_lock("a", 1)
                elif step == "unlocked":
                    lock = store.try_lock("unlocked", 60)
                    lock.unlock()
                    lock.extend(60)
                elif step == "sleep":
                    time.sleep(int(next(args)) / 1000)
                else:
                    raise ValueError(f"unknown step {step}")
            except latchkey.LockError as err:
                assert type(err) is CLASSES[err.kind], f"{err.kind} came as {type(err)}"
                print(f"error {err}")
