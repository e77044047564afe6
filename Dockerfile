# payorch: multi-stage image. The builder compiles the `payorch` binary in
# release mode; the runtime stage is Debian slim with only CA certificates
# and the binary, running as an unprivileged user.
#
#   docker build -t payorch .
#   docker run --rm -p 8080:8080 payorch            # SQLite in /var/lib/payorch, in-process sandbox
#   docker compose up                               # with Postgres and RabbitMQ (compose.yaml)

FROM rust:1.90-bookworm AS build
# aws-lc-rs (PayKKa request signing) builds its C library with cmake and clang.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin payorch \
    && strip target/release/payorch \
    && cp target/release/payorch /usr/local/bin/payorch

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/payorch --create-home --uid 10001 payorch
COPY --from=build /usr/local/bin/payorch /usr/local/bin/payorch
USER payorch
WORKDIR /var/lib/payorch
ENV PAYORCH_ADDR=0.0.0.0:8080 \
    PAYORCH_STORE_URL=sqlite:///var/lib/payorch/payorch.db \
    PAYORCH_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/payorch"]
ENTRYPOINT ["payorch"]
CMD ["serve"]
