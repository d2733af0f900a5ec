# dlmsd container image: the daemon as a non-root user, config and key store
# mounted read-only at /etc/dlmsd, state (counters, spool, quarantine) on a volume.
#
#   docker build -t dlmsd .
#   docker compose up            # dlmsd + mosquitto (compose.yaml)
#
# The key store must be owned by the container user (uid 10001) with mode 0600:
# the daemon refuses key files others could read or that another user owns.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY dlmsd ./dlmsd
COPY twisted ./twisted
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG EXTRAS=postgres
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/dlmsd/.venv/bin:$PATH
COPY --from=build /wheels /wheels
RUN python -m venv /opt/dlmsd/.venv \
    && /opt/dlmsd/.venv/bin/pip install --no-cache-dir "$(ls /wheels/dlmsd-*.whl)[${EXTRAS}]" \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 dlmsd \
    && useradd --system --uid 10001 --gid dlmsd --home-dir /var/lib/dlmsd \
        --shell /usr/sbin/nologin dlmsd \
    && install -d -o dlmsd -g dlmsd -m 0700 /var/lib/dlmsd \
    && install -d -o root -g dlmsd -m 0750 /etc/dlmsd
COPY --chown=root:dlmsd --chmod=0640 deploy/container/dlmsd.toml /etc/dlmsd/dlmsd.toml

USER 10001:10001
WORKDIR /var/lib/dlmsd
VOLUME ["/var/lib/dlmsd"]
# DLMS/COSEM wrapper (IANA 4059, UDP and TCP); metrics, /healthz and /readyz.
EXPOSE 4059/udp 4059/tcp 9464/tcp
# Liveness: the reactor answers /healthz (the config must enable [metrics]).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
# SIGTERM: stop listening, commit, drain the sinks; give it the unit's 30 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["dlmsd"]
CMD ["run", "--config", "/etc/dlmsd/dlmsd.toml"]
