# Two stages: the builder makes a virtualenv from the hash-pinned lock plus the bot itself; the
# runtime image gets only that virtualenv, runs as an unprivileged user and keeps its data in /app/data.
# No `# syntax=` line: it would make BuildKit pull a frontend image, and nothing here needs a newer one,
# so the legacy builder and BuildKit both build it with no pull but the base image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# PIP_ROOT_USER_ACTION: the builder runs pip as root on purpose; that is not worth a warning.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the lock changes, not on every code change.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
# --no-deps: everything came from the lock above; --no-build-isolation: build with the pinned setuptools.
RUN pip install --no-deps --no-build-isolation . \
    && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    DATABASE_PATH=/app/data/bot.sqlite3 \
    MPLCONFIGDIR=/tmp/matplotlib
# A fixed uid/gid, so a bind-mounted data folder can be handed over with `chown 10001:10001 data`.
# A plain (not --system) user: system ids stop at 999, and 10001 is above that. No login shell;
# --no-log-init keeps it out of lastlog/faillog.
RUN groupadd --gid 10001 bot \
    && useradd --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin \
        --no-log-init bot \
    && mkdir -p /app/data \
    && chown bot:bot /app/data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER bot
# The database, its backups and the heartbeat file live here; a new named volume copies this owner.
VOLUME ["/app/data"]
# The webhook listener (only with WEBHOOK_PUBLIC_URL and WEBHOOK_SECRET set). /metrics listens on
# METRICS_PORT when that is set. (MPLCONFIGDIR above: matplotlib keeps its font cache in a folder the
# bot's user can write, made at the first usage chart.)
EXPOSE 8080
# Healthy while the gateway is connected (a heartbeat file; plus /healthz when webhooks are on).
HEALTHCHECK --interval=30s --timeout=15s --start-period=90s --retries=3 \
    CMD ["python", "-m", "bot", "health"]
# SIGTERM (docker stop) lets running tasks reach a safe point before the bot exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
