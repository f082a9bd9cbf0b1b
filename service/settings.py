"""Service settings: one pydantic-settings class, read from ``ISVOS_*`` environment variables
(nested sections with ``__``: ``ISVOS_REDIS__URL``, ``ISVOS_BACKEND__KIND``, ...) and
validated at start-up. Nothing else in the service reads the environment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from isvos.limits import MAX_OBJECT_ID, MIN_PROCESSING_SIDE
from service.media.limits import MediaLimits


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    # redis://host:port/db; empty: `isvos serve` starts a private server (embedded default).
    url: str = ""
    # Prefix of every key the service writes (service.keys), so deployments can share a Redis.
    key_prefix: str = Field("isvos", pattern=r"^[A-Za-z0-9_.-]{1,32}$")


class BackendSettings(_Section):
    kind: Literal["local", "triton"] = "local"
    # Model config the workers run (local) or that the Triton model serves (checked on submit).
    config: str = "lite"
    # Checkpoint of the local backend; empty: the one shipped for the config.
    checkpoint: str = ""
    device: str = "cpu"
    # torch intra-op threads of a local worker (0: torch's default).
    threads: int = Field(0, ge=0)
    # Triton gRPC endpoints: HOST:PORT, or dns:///NAME:PORT for every address of a name (a
    # headless Service: one per pod). A session goes to the least-loaded server and stays.
    triton_urls: list[str] = Field(["127.0.0.1:8001"], min_length=1)
    # A session's server that answers nothing for this long is given up: the session is
    # re-primed on another server (with one server, calls are retried for 30 s instead).
    triton_failover_s: float = Field(3.0, gt=0)
    # Sessions a worker runs at once (Triton: many, so sessions batch on the server).
    concurrency: int = Field(1, ge=1, le=256)


class StorageSettings(_Section):
    # Blobs (uploads, masks, outputs, session-record slots) and the embedded Redis's files.
    data_dir: Path = Path("isvos-data")


class LimitsSettings(_Section):
    # Largest upload (video), enforced while the body streams in.
    max_upload_bytes: int = Field(2 << 30, ge=1)
    # Largest mask file (an indexed PNG, binary PNGs or RLE JSON).
    max_mask_bytes: int = Field(64 << 20, ge=1)
    # Frames a video may have, and its largest frame size.
    max_frames: int = Field(100_000, ge=1)
    max_width: int = Field(7680, ge=16)
    max_height: int = Field(4320, ge=16)
    # Mask files in one request.
    max_mask_files: int = Field(MAX_OBJECT_ID, ge=1, le=MAX_OBJECT_ID)
    # Per API key: jobs waiting, and jobs waiting or running, beyond which submits get 429.
    max_queued_jobs: int = Field(32, ge=1)
    max_active_jobs: int = Field(64, ge=1)
    # Processing short side bounds of a job.
    max_short_side: int = Field(1080, ge=MIN_PROCESSING_SIDE)
    # Largest image sent for instance proposals (POST /v1/proposals).
    max_image_bytes: int = Field(32 << 20, ge=1)
    # A request body that stops arriving for this long is answered 408 (a stalled or slow
    # client cannot hold a connection and its upload open).
    body_idle_timeout_s: float = Field(30.0, gt=0)

    def media(self) -> MediaLimits:
        """The media layer's limits (the same checks ``isvos segment`` makes)."""
        return MediaLimits(max_file_bytes=self.max_upload_bytes, max_width=self.max_width,
                           max_height=self.max_height, max_frames=self.max_frames)  # fmt: skip


class AuthSettings(_Section):
    # API keys by name: the SHA-256 hex digest of each bearer token (never the token itself).
    # Empty: no keys, every caller is "anonymous" (the embedded default).
    keys: dict[str, str] = {}

    @field_validator("keys")
    @classmethod
    def _digests(cls, keys: dict[str, str]) -> dict[str, str]:
        for name, digest in keys.items():
            if not name or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(
                    f"key {name!r}: give the sha256 hex digest of the token "
                    "(python -c 'import hashlib,sys;print(hashlib.sha256(sys.argv[1].encode())"
                    ".hexdigest())' TOKEN)"
                )
        return keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


class JobSettings(_Section):
    # How long jobs, their events and their files are kept after they finish (seconds).
    retention_s: int = Field(86_400, ge=1)
    # A worker renews its claim this often; a job unrenewed for lease_s moves to another.
    lease_s: float = Field(30.0, gt=0)
    # Claims a job gets before it fails (a job that crashes every worker must stop).
    max_attempts: int = Field(5, ge=1)
    # Progress events kept per job (a capped stream).
    events_max: int = Field(2000, ge=10)
    # How often the sweeper removes files of expired jobs.
    sweep_every_s: float = Field(60.0, gt=0)
    # How long the gateway waits for a worker's instance proposals before answering 503.
    proposals_timeout_s: float = Field(30.0, gt=0)

    @property
    def renew_every_s(self) -> float:
        return self.lease_s / 3


class GrpcSettings(_Section):
    # Address of the gRPC server (`isvos grpc`, `isvos serve --grpc-port`).
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    # TLS: server certificate and key (PEM files); with client_ca also mutual TLS.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Plaintext is refused on addresses other than loopback unless this is set.
    allow_insecure: bool = False
    # Streams at once (server-wide and per API key), beyond which Track answers
    # RESOURCE_EXHAUSTED.
    max_streams: int = Field(32, ge=1)
    max_streams_per_key: int = Field(8, ge=1)
    # Largest message (a raw 1080p RGB frame is 6.2 MB, over gRPC's 4 MB default).
    max_message_bytes: int = Field(16 << 20, ge=1 << 20)
    # A broken stream can be resumed for this long (its record is kept in Redis and blobs).
    resume_ttl_s: int = Field(600, ge=1)
    # A stream whose first message (open) does not come within open_timeout_s, or whose
    # next message does not come within idle_timeout_s, ends with DEADLINE_EXCEEDED
    # (request_timeout): a silent client cannot hold a stream slot for ever.
    open_timeout_s: float = Field(30.0, gt=0)
    idle_timeout_s: float = Field(300.0, gt=0)
    # Results kept for a resume, in frames (those sent but maybe not received).
    resume_results: int = Field(64, ge=1)
    # HTTP/2 keepalive pings (seconds).
    keepalive_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _tls(self) -> GrpcSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("grpc.tls_cert and grpc.tls_key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("grpc.tls_client_ca (mutual TLS) needs grpc.tls_cert and tls_key")
        loopback = self.host in ("127.0.0.1", "localhost", "::1")
        if not (self.tls_cert or loopback or self.allow_insecure):
            raise ValueError(
                f"grpc.host {self.host!r} is not loopback: give grpc.tls_cert/tls_key, or set "
                "grpc.allow_insecure for a trusted network"
            )
        return self


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ISVOS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Workers `isvos serve` starts beside the gateway.
    workers: int = Field(1, ge=0, le=64)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    redis: RedisSettings = RedisSettings()
    backend: BackendSettings = BackendSettings()
    storage: StorageSettings = StorageSettings()
    limits: LimitsSettings = LimitsSettings()
    auth: AuthSettings = AuthSettings()
    jobs: JobSettings = JobSettings()
    grpc: GrpcSettings = GrpcSettings()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        from isvos.config import CONFIGS

        if self.backend.config not in CONFIGS:
            raise ValueError(
                f"backend.config {self.backend.config!r} is not one of {sorted(CONFIGS)}"
            )
        return self
