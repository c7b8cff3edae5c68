# Production image: multi-stage build, non-root runtime.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY tests ./tests
RUN cargo build --release --bin threadstore

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home threadstore
COPY --from=build /src/target/release/threadstore /usr/local/bin/threadstore
USER threadstore
ENV LISTEN_ADDR=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fs http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["threadstore"]
CMD ["serve"]
