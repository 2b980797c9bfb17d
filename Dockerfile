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

# glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/catalio-operator /usr/local/bin/catalio-operator
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/catalio-operator"]
CMD ["run"]
