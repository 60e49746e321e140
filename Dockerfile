FROM python:3.11-slim
WORKDIR /app
# The dependencies first, hash-checked from the lock (this layer changes only with it)...
COPY requirements/run.lock /tmp/run.lock
RUN pip install --no-cache-dir -r /tmp/run.lock && rm /tmp/run.lock
# ...then the package itself, a real (non-editable) install: migrations and openapi.json ship
# inside it, and the source is gone from the image. The build backend comes from the lock too.
COPY pyproject.toml README.md /tmp/src/
COPY introspect /tmp/src/introspect
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/src && rm -rf /tmp/src \
    && useradd --system introspect
USER introspect
ENV INTROSPECT_HOST=0.0.0.0 INTROSPECT_PORT=8080 INTROSPECT_DATA_DIR=/tmp/introspect
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz')"
CMD ["introspect", "serve", "--workers", "2"]
