#!/usr/bin/env bash
# Quick mode of the comparison harness, for CI: vet the bench module and run
# every case with small counts (go test ./... here runs TestQuick, a few
# seconds per case), so that the harness cannot rot. bench/ is a separate
# Go module, so the main module's `go test ./...` does not include it.
# RabbitMQ must be up when DISPYTCH_REQUIRE_BROKERS=1 (as in .ci/run).
set -euo pipefail
cd "$(dirname "$0")"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "bench: gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -count=1 -timeout 15m ./...
