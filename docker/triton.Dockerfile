# syntax=docker/dockerfile:1.7
# The Triton image: NVIDIA's tritonserver with the python backend, a CUDA build of torch, the
# isvos model package, and the `lite` graphs exported from the shipped checkpoint into the
# model repository (laid out as model_repo/: /models/isvos/{config.pbtxt,1/}).
#   docker build -f docker/triton.Dockerfile -t isvos-triton .
# Triton 25.01 (server 2.54): Ubuntu 24.04, Python 3.12, CUDA 12.8.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# The project's wheel, built apart so the Triton stage gets no sources it does not need.
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY isvos ./isvos
COPY service ./service
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${TRITON_IMAGE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# torch pinned as everywhere (a CUDA build from the PyTorch index), then the package with
# its model extra; the python backend's stub runs this Python.
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0 \
    && pip install --no-cache-dir "$(ls /wheels/isvos-*.whl)[model]" \
    && rm -rf /wheels
# The model repository: the config and model.py exactly as in model_repo/, the graphs made
# here from the shipped lite checkpoint (export runs on the CPU; the graphs load on the GPU).
COPY model_repo/isvos/config.pbtxt /models/isvos/config.pbtxt
COPY model_repo/isvos/1/model.py /models/isvos/1/model.py
RUN isvos export --config lite --out /models/isvos/1 \
    && chown -R 1000:1000 /models
# NGC's unprivileged user (triton-server, uid 1000).
USER 1000:1000
WORKDIR /tmp
EXPOSE 8000 8001 8002
# Ready for new sessions: /v2/health/ready and not draining (isvos triton-drain).
HEALTHCHECK --interval=15s --timeout=8s --start-period=120s --retries=3 \
    CMD ["isvos", "triton-probe", "--http-url", "http://127.0.0.1:8000", "--url", "127.0.0.1:8001"]
ENTRYPOINT ["isvos"]
CMD ["triton", "--model-repo", "/models", "--config", "lite", "--host", "0.0.0.0", \
     "--grpc-port", "8001", "--http-port", "8000", "--metrics-port", "8002", "--device", "gpu"]
