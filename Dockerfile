# streamscore on a slim Python base with the CPU build of PyTorch, as a non-root user.
# Not exercised by CI (no Docker engine runs on the build machines); it installs exactly as
# scripts/setup does: pip install of this package with its pinned dependencies.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# The CPU wheel of torch==2.13.0 (pinned in pyproject.toml), not the multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install .

RUN useradd --create-home --uid 10001 streamscore && mkdir /data && chown streamscore /data
USER streamscore
VOLUME /data
EXPOSE 8000
# Keys are required on 0.0.0.0 (the service refuses to start without them): mount a file of
# `KEY SCOPE,...` lines at /run/secrets/streamscore_api_keys (a Docker/compose secret), or set
# STREAMSCORE_API_KEYS.
ENV STREAMSCORE_HOST=0.0.0.0 STREAMSCORE_STORE=sqlite:////data/events.db \
    STREAMSCORE_API_KEY_FILE=/run/secrets/streamscore_api_keys
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=2)"
CMD ["streamscore", "serve"]
