# leadlex-sync: one image for every process (web, worker, beat, flower, sandbox).
#   docker build -t leadlex-sync .
#   docker run --env-file .env -p 8000:8000 leadlex-sync            # the receiver
#   docker run --env-file .env leadlex-sync celery -A worker worker
# Runtime dependencies only (no test/dev extras); runs as an unprivileged user.
# Python 3.11: the version CI tests (bootstrap.py / .ci/run), so we ship what we test.

# ---- build: wheels for the project and its dependencies (compilers stay in this stage) ----
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

# ---- runtime ----
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LOG_FORMAT=json \
    PORT=8000
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels leadlex-sync \
 && rm -rf /wheels
WORKDIR /app
# Only what the processes read at run time: gunicorn settings, the Procfile, docs/examples.
COPY deploy/ ./deploy/
COPY Procfile ./
COPY docs/ ./docs/
USER app
EXPOSE 8000 5555 8787
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "webhook_app:create_app()"]
