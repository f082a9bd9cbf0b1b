"""The gRPC server (``isvos grpc``): ``isvos.v1.Segmentation`` beside the standard health
and reflection services, with deliberate message limits, keepalive, API keys and TLS."""

from __future__ import annotations

from pathlib import Path

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.backends.base import Backend
from service.blobs import LocalBlobStore
from service.keys import Keys
from service.rpc.gen import segmentation_pb2 as pb
from service.rpc.gen import segmentation_pb2_grpc as pb_grpc
from service.rpc.servicer import SegmentationServicer
from service.rpc.store import StreamStore
from service.settings import Settings

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Segmentation"].full_name


def credentials(settings: Settings) -> grpc.ServerCredentials | None:
    g = settings.grpc
    if not g.tls_cert:
        return None
    key, cert = Path(g.tls_key).read_bytes(), Path(g.tls_cert).read_bytes()
    ca = Path(g.tls_client_ca).read_bytes() if g.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)  # fmt: skip


class GrpcServer:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        g = settings.grpc
        options = [
            ("grpc.max_receive_message_length", g.max_message_bytes),
            ("grpc.max_send_message_length", g.max_message_bytes),
            ("grpc.keepalive_time_ms", int(g.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        self.settings = settings
        self.backend = backend
        self.server = grpc.aio.server(options=options)
        self.redis = aioredis.from_url(settings.redis.url, socket_timeout=30)
        store = StreamStore(self.redis, Keys(settings.redis.key_prefix),
                            LocalBlobStore(settings.storage.data_dir / "blobs"),
                            g.resume_ttl_s, g.resume_results)  # fmt: skip
        self.servicer = SegmentationServicer(settings, backend, store)
        pb_grpc.add_SegmentationServicer_to_server(self.servicer, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"{g.host}:{g.port}"
        creds = credentials(settings)
        if creds is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, creds)

    async def start(self) -> None:
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float = 5.0) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        await self.redis.aclose()
