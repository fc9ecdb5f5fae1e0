# facegan training / flow image: CUDA-enabled torch (the registry's standard build bundles the
# CUDA runtime; the host needs only the NVIDIA driver + container toolkit), facegan and its flows.
# Build: make docker-build     Run: make docker-train     Used by the Prefect Docker work pool.

# ---- build stage: a virtual environment with the pinned dependencies -----------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt
COPY pyproject.toml README.md ./
COPY facegan ./facegan
COPY flows ./flows
RUN pip install --no-deps .

# ---- runtime stage: the venv and the code, nothing else -----------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="facegan" \
      org.opencontainers.image.description="DCGAN face generation: training and Prefect flows"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACEGAN_CACHE=/cache \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 1000 facegan \
    && useradd --system --uid 1000 --gid facegan --home-dir /home/facegan --create-home facegan \
    && mkdir -p /cache /data /store \
    && chown facegan:facegan /cache /data /store
COPY --from=build /opt/venv /opt/venv
WORKDIR /opt/facegan
COPY prefect.yaml ./
COPY flows ./flows
COPY docker/entrypoint.sh /usr/local/bin/facegan-entrypoint
USER 1000:1000
# `docker run IMAGE train --dataset ...` runs `facegan train ...`; any other command (e.g. the
# Prefect worker's `prefect flow-run execute`) runs as given. SIGTERM reaches Python directly,
# which checkpoints and exits (spot interruption).
ENTRYPOINT ["/usr/local/bin/facegan-entrypoint"]
CMD ["facegan", "--help"]
