FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY introspect ./introspect
RUN pip install --no-cache-dir -e . && useradd --system introspect
USER introspect
ENV INTROSPECT_HOST=0.0.0.0 INTROSPECT_PORT=8080 INTROSPECT_DATA_DIR=/tmp/introspect
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz')"
CMD ["introspect", "serve", "--workers", "2"]
