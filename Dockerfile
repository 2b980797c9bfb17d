# A small, non-root image of the release binary.
#   docker build -t <registry>/catalio-operator:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
# Swagger UI, built into the binary for the API explorer.
COPY assets/swagger-ui assets/swagger-ui
# A workspace member; cargo needs it to resolve the lockfile.
COPY tests/support tests/support
RUN cargo build --release --locked --bin catalio-operator
# The root filesystem is laid out by the same script the node test uses.
COPY image/rootfs.sh image/rootfs.sh
RUN image/rootfs.sh target/release/catalio-operator /rootfs

# The binary, the glibc it links, CA certificates; no shell. Runs as 65532.
# image/oci.py reads USER, ENTRYPOINT, CMD and EXPOSE from this stage.
FROM scratch
COPY --from=build /rootfs /
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/catalio-operator"]
CMD ["run"]
