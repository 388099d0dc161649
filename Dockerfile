# Builds the image deploy/daemonset.yaml runs: docker build -t sluice .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sluice

FROM gcr.io/distroless/cc-debian12
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
ENTRYPOINT ["/usr/local/bin/sluice"]
