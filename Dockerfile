# facegan training / flow image: CUDA-enabled torch (the registry's standard build bundles the
# CUDA runtime; the host needs only the NVIDIA driver + container toolkit), facegan and its flows.
# Build: make docker-build     Run: make docker-train     Check: make image-check
# Used by the Prefect Docker work pool.

# The base, pinned by digest (python 3.11.10, Debian bookworm). `make image-check` builds with a
# local stand-in where Docker Hub cannot be reached: --build-arg PYTHON_IMAGE=...
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# ---- deps stage: a virtual environment with the pinned dependencies, and nothing of facegan ---
# Its /opt/venv changes only with requirements.txt/constraints.txt, so the runtime stage's copy of
# it (6 GB of CUDA torch) is a cached layer that every rebuild after a code change shares.
FROM ${PYTHON_IMAGE} AS deps
# PIP_CERT: a CA bundle for pip behind a TLS-inspecting proxy (mounted during the build only)
ARG PIP_CERT=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

# ---- wheel stage: facegan and its flows as one wheel (a few hundred kB) ----------------------
FROM ${PYTHON_IMAGE} AS wheel
ARG PIP_CERT=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/build
COPY pyproject.toml README.md ./
COPY facegan ./facegan
COPY flows ./flows
RUN /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels .

# ---- runtime stage: the venv, then facegan installed into it, nothing else ---------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="facegan" \
      org.opencontainers.image.description="DCGAN face generation: training and Prefect flows"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACEGAN_CACHE=/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/facegan
# uid 1000 by default; `docker run --user UID:GID` (make docker-train passes yours) works as well:
# the folders the image owns are writable by any user, files it writes follow the umask.
RUN groupadd --gid 1000 facegan \
    && useradd --uid 1000 --gid facegan --home-dir /home/facegan --create-home --shell /usr/sbin/nologin facegan \
    && mkdir -p /cache /data /store \
    && chown facegan:facegan /cache /data /store \
    && chmod 1777 /cache /store /home/facegan
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
WORKDIR /opt/facegan
COPY prefect.yaml ./
COPY flows ./flows
COPY docker/init.py /usr/local/bin/facegan-init
USER 1000:1000
# PID 1 is facegan-init: `IMAGE train ...` (any facegan subcommand, or `IMAGE --help`) runs the
# facegan CLI, any other command (the Prefect worker's `prefect flow-run execute`) runs as given,
# and SIGTERM is forwarded to every process, so a `docker stop` (spot interruption) reaches the
# training wherever it runs: it checkpoints and exits.
ENTRYPOINT ["/opt/venv/bin/python", "/usr/local/bin/facegan-init"]
CMD ["--help"]
