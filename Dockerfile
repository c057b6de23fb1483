# syntax=docker/dockerfile:1
# One image, three static binaries: /usr/local/bin/sidecar (the default entrypoint),
# /usr/local/bin/provisioner and /usr/local/bin/injector. The runtime stage is distroless
# static: no shell, no package manager, non-root (uid 65532). The injector's "wait" subcommand
# stands in for a shell in the classic sidecar's postStart hook.
#
#   docker build -t rds-valet:dev .          (or: make image)

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that source edits do not invalidate the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
# CGO off: static binaries that run on distroless/static (no libc). -trimpath and no VCS
# stamping: reproducible builds independent of the checkout path and of .git being present.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ \
      ./cmd/sidecar ./cmd/provisioner ./cmd/injector

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidecar /out/provisioner /out/injector /usr/local/bin/
# Numeric, so that kubelet's runAsNonRoot check can verify it without reading /etc/passwd.
USER 65532:65532
# 9090: sidecar admin (metrics, probes); 8443: injector webhook; 9091: injector metrics.
EXPOSE 9090 8443 9091
ENTRYPOINT ["/usr/local/bin/sidecar"]
CMD ["--config", "/etc/rds-valet/config.yaml"]
