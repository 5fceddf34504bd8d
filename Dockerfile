# syntax=docker/dockerfile:1.7
# Microplane's images, for machines with Docker/BuildKit (release pipelines, users building their own):
#   docker buildx build --target operator   -t ghcr.io/microplane-dev/microplane-operator:0.1.0 .
#   docker buildx build --target gateway    -t ghcr.io/microplane-dev/microplane-gateway:0.1.0 .
#   docker buildx build --target helloworld -t ghcr.io/microplane-dev/helloworld:0.1.0 .
# Static (musl) release binaries on distroless/static, user 65532. `make images` builds the same
# runtime layout on machines without Docker (e2e/scripts/build-images.sh): the binaries in
# /usr/local/bin, the nonroot user, the CA bundle, and the gateway's dashboard files.

ARG RUST_VERSION=1.95
FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN case "$TARGETARCH" in \
      amd64) echo x86_64-unknown-linux-musl ;; \
      arm64) echo aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac >/rust-target && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(cat /rust-target)" \
 && cargo build --locked --release --target "$target" \
      -p microplane-operator -p microplane-gateway -p helloworld --bins \
 && mkdir -p /out \
 && cp "target/$target/release/microplane-operator" "target/$target/release/microplane-gateway" \
       "target/$target/release/helloworld" "target/$target/release/helloworld-call" /out/

# The web dashboard's static files (Vite + TypeScript), served by the gateway at /.dashboard/.
FROM --platform=$BUILDPLATFORM docker.io/library/node:20-bookworm AS dashboard
WORKDIR /src/dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard/ ./
RUN npm run build

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
LABEL org.opencontainers.image.source="https://github.com/microplane-dev/microplane" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532

FROM runtime AS operator
COPY --from=build /out/microplane-operator /usr/local/bin/microplane-operator
ENTRYPOINT ["/usr/local/bin/microplane-operator"]

FROM runtime AS gateway
COPY --from=build /out/microplane-gateway /usr/local/bin/microplane-gateway
COPY --from=dashboard /src/dashboard/dist /usr/share/microplane/dashboard
ENTRYPOINT ["/usr/local/bin/microplane-gateway"]

FROM runtime AS helloworld
COPY --from=build /out/helloworld /out/helloworld-call /usr/local/bin/
ENV MICRO_SERVICE_ADDRESS=:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/helloworld"]
