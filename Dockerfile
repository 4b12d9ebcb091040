# syntax=docker/dockerfile:1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X github.com/spot-rebalancer/spot-rebalancer/internal/version.Version=${VERSION} -X github.com/spot-rebalancer/spot-rebalancer/internal/version.Commit=${COMMIT}" \
	-o /out/spot-rebalancer ./cmd/spot-rebalancer

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/spot-rebalancer /spot-rebalancer
USER 65532:65532
ENTRYPOINT ["/spot-rebalancer"]
