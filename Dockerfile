# Switchyard gateway image: the hash-pinned lock, the package, a non-root user. Built by compose.yaml.
FROM python:3.11.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
RUN pip install --no-deps . && useradd --create-home --uid 10001 switchyard && mkdir /data && chown switchyard /data
USER switchyard
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
ENTRYPOINT ["switchyard"]
CMD ["serve", "--config", "/etc/switchyard/gateway.yaml", "--host", "0.0.0.0", "--workers", "2"]
