# Banana Bot: a small image that runs as a non-root user and keeps its data in a volume.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY storage ./storage
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 10001 banana \
    && mkdir -p /data/images \
    && chown -R banana:banana /data
USER 10001
WORKDIR /home/banana
ENV BANANA_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
HEALTHCHECK --interval=60s --timeout=10s --start-period=90s --retries=3 CMD ["banana-bot", "health"]
ENTRYPOINT ["banana-bot"]
CMD ["run"]
