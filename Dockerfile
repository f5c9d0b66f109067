# Image for `conveyor serve` (used by fly.toml). Steps shell out to git and sh at run time.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/conveyor /usr/local/bin/conveyor
ENTRYPOINT []
CMD ["conveyor", "serve"]
