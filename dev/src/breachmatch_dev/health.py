"""Wait until a started service's plaintext grpc.health.v1 port reports SERVING.

The local stack (`make up`, the demo, the tests' stacks) and the deploy smoke
test (the pods under podman) both start services and must know when they
serve. Both watch the standard health service, as Kubernetes' probes do,
rather than sleep or poll a port.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_serving(port: int, timeout: float, alive: Callable[[], None]) -> bool:
    """True once 127.0.0.1:`port` reports SERVING (a Watch stream), False at the deadline.

    `alive` runs before every attempt and raises when whatever is being waited
    for has died, so a crashed start-up fails at once rather than at the deadline.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=min(2.0, timeout))
                stream = health_pb2_grpc.HealthStub(channel).Watch(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=max(0.1, deadline - time.monotonic()),
                )
                for reply in stream:
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return True
            except (grpc.FutureTimeoutError, grpc.RpcError):
                continue
    return False
