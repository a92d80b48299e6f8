# One image per service, all from this file: `SERVICE` names the binary.
#
#   docker build --build-arg SERVICE=orders -t orders:dev .
#
# Stages:
#   chef     the Rust toolchain plus cargo-chef
#   planner  reduces the workspace to a recipe: its manifests and Cargo.lock; and
#            lists the packages the images ship: every service, and `stack`
#   builder  compiles their dependencies from the recipe (one layer, cached until a
#            manifest or Cargo.lock changes), then their binaries
#   binary   picks the binary of SERVICE
#   runtime  distroless, non-root: the binary and nothing else (no shell, no package
#            manager)
#
# Why cargo-chef rather than BuildKit cache mounts: the compiled dependencies are an
# ordinary image layer, so they are cached like any layer — locally, and in CI through
# `--cache-from`/`--cache-to` registry or GitHub caches, which cache mounts never reach.
# Editing our own code then recompiles our crates only.
#
# Why `builder` builds every service and does not depend on SERVICE: building the five
# images (scripts/kind-up.sh) compiles the workspace once; the four other builds reuse
# the cached `builder` stage and only differ from `binary` on. It leaves out the bench
# harness, whose three binaries no image runs: each would be one more fat-LTO link.
#
# How many compilers run at once (`cargo-jobs`, scripts/cargo-jobs.sh): one per CPU,
# but at most one per 1.5 GiB of available memory, since a fat-LTO link alone takes
# up to 1.5 GB. `--build-arg CARGO_BUILD_JOBS=N` sets it.

ARG RUST_VERSION=1.95
# The runtime base must ship the glibc the builder links against: both Debian 12.
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
# Set before the dependencies are cooked: cook and build must use the same profile,
# or the cooked dependencies are not reused. Symbols are stripped for a small image
# (panics still name their location; backtraces lose function names).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_INCREMENTAL=0 \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
COPY scripts/cargo-jobs.sh /usr/local/bin/cargo-jobs
WORKDIR /build

FROM chef AS planner
COPY . .
# `packages`: one `--package` argument a line, for both cargo steps of `builder`.
RUN cargo chef prepare --recipe-path recipe.json \
 && for dir in services/*/; do echo "--package $(basename "$dir")"; done >packages \
 && echo "--package stack" >>packages

FROM chef AS builder
# Unset unless given with --build-arg: then it is the number of jobs (cargo-jobs).
ARG CARGO_BUILD_JOBS
COPY --from=planner /build/recipe.json /build/packages ./
RUN jobs="$(cargo-jobs)" \
 && xargs cargo chef cook --release --locked --jobs "$jobs" --bins --recipe-path recipe.json <packages
COPY . .
# The binaries of the services, and of the `stack` launcher (`SERVICE=stack` makes an
# all-in-one image): the same packages as the cook step, so that dependencies resolve
# the same features and are not rebuilt.
RUN jobs="$(cargo-jobs)" \
 && xargs cargo build --release --locked --jobs "$jobs" --bins <packages

FROM builder AS binary
ARG SERVICE
RUN if [ -z "${SERVICE}" ]; then \
      echo "SERVICE is not set: docker build --build-arg SERVICE=<name> (a folder of services/)" >&2; \
      exit 1; \
    fi; \
    if [ ! -x "target/release/${SERVICE}" ]; then \
      echo "no binary named '${SERVICE}': SERVICE names one of $(echo services/*), or stack" >&2; \
      exit 1; \
    fi; \
    cp "target/release/${SERVICE}" /service

# No HEALTHCHECK: Kubernetes ignores it and runs the probes of the manifests (gRPC
# health, or HTTP for the gateway), and distroless has no shell or client to run one.
# checkov:skip=CKV_DOCKER_2:Kubernetes ignores HEALTHCHECK and probes gRPC health itself; distroless has nothing to run a check with
# `:nonroot` runs as uid/gid 65532. Debian 12's glibc and libgcc (unwinding), CA
# certificates and tzdata; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG SERVICE
LABEL org.opencontainers.image.title="${SERVICE}" \
      org.opencontainers.image.description="The ${SERVICE} service of grpc-rust-template" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
# A fixed path, because ENTRYPOINT cannot expand build arguments and there is no shell
# to do it: the image name, the logs (`service` field) and the Kubernetes names carry
# the service's name.
COPY --from=binary /service /usr/local/bin/service
# Numeric, so that Kubernetes can check `runAsNonRoot` against the image.
USER 65532:65532
# The port depends on the service (see README: 8080, 50051…50054); Kubernetes
# manifests declare it, and LISTEN_ADDR changes it.
ENTRYPOINT ["/usr/local/bin/service"]
