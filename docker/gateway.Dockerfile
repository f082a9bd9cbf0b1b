# syntax=docker/dockerfile:1.7
# The gateway image: HTTP gateway (`isvos gateway`), gRPC streams (`isvos grpc`) and workers
# on the Triton backend (`isvos worker`). Torch-free: the model runs in the Triton image.
#   docker build -f docker/gateway.Dockerfile -t isvos-gateway .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY isvos ./isvos
COPY service ./service
# The base install only (no `model` extra): a test imports the gateway and worker entry
# points with torch made unimportable. The checkpoints are package data the gateway never
# reads; they are left out of this image.
RUN python -m venv /opt/isvos \
    && /opt/isvos/bin/pip install --no-cache-dir . \
    && rm -rf /opt/isvos/lib/python3.11/site-packages/isvos/checkpoints

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/isvos/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ISVOS_HOST=0.0.0.0 \
    ISVOS_PORT=8080 \
    ISVOS_STORAGE__DATA_DIR=/data \
    ISVOS_BACKEND__KIND=triton
COPY --from=build /opt/isvos /opt/isvos
RUN groupadd --system --gid 10001 isvos \
    && useradd --system --uid 10001 --gid isvos --home-dir /data --no-create-home isvos \
    && mkdir -p /data \
    && chown isvos:isvos /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 50051
# Compose and Kubernetes give the gRPC server and workers their own checks.
HEALTHCHECK --interval=15s --timeout=6s --start-period=20s --retries=3 \
    CMD ["isvos", "probe", "--http", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["isvos"]
CMD ["gateway"]
