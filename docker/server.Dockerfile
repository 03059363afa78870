# The API server and dashboard: no torch (the server never imports it).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
COPY studies ./studies
RUN pip install --no-cache-dir '.[server]'
EXPOSE 8000
# Migrates the schema first (HPO_AUTO_MIGRATE defaults to true), then serves.
CMD ["hpo", "server", "--host", "0.0.0.0", "--port", "8000"]
