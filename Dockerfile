# Image for `conveyor serve` (used by fly.toml and docker-compose.yml). Steps shell out to git and sh at run time,
# inside bubblewrap with a user-mode network (slirp4netns); curl answers health checks.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        git ca-certificates curl bubblewrap slirp4netns tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /data --shell /usr/sbin/nologin conveyor \
    && mkdir -p /data \
    && chown conveyor:conveyor /data
COPY --from=build /src/target/release/conveyor /usr/local/bin/conveyor
COPY deploy/entrypoint.sh /usr/local/bin/conveyor-entrypoint
WORKDIR /data
# tini is PID 1: it forwards signals to Conveyor and reaps orphans (the processes of steps
# whose parent is gone). The entrypoint gives a mounted /data to `conveyor`, then drops root.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/conveyor-entrypoint"]
CMD ["conveyor", "serve"]
