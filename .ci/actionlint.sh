#!/usr/bin/env bash
# Lint the GitHub workflows with actionlint, built once from its Go module (the module proxy is
# reachable where release downloads may not be) and cached by version under
# ~/.cache/ray-conformance/tools/. Without Go it says so and skips: nothing else to build it with.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=v1.7.12
MODULE=github.com/rhysd/actionlint/cmd/actionlint
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/ray-conformance/tools/actionlint-$VERSION"
BUILD_TIMEOUT_S=600  # a cold build on 2 cores takes about a minute; a hung proxy must not stall `make`

if [ ! -x "$TOOLS/actionlint" ]; then
  GO=$(command -v go || true)
  [ -z "$GO" ] && [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go
  if [ -z "$GO" ]; then
    echo "actionlint: SKIPPED: no Go toolchain (go on PATH or /usr/local/go/bin) to build $MODULE@$VERSION"
    exit 0
  fi
  echo "actionlint: building $MODULE@$VERSION into $TOOLS (once; bounded by ${BUILD_TIMEOUT_S} s)"
  mkdir -p "$TOOLS"
  if ! timeout "$BUILD_TIMEOUT_S" env GOBIN="$TOOLS" GOFLAGS=-mod=mod "$GO" install "$MODULE@$VERSION"; then
    echo "actionlint: building $MODULE@$VERSION with $GO failed or took over ${BUILD_TIMEOUT_S} s" >&2
    exit 1
  fi
fi
"$TOOLS/actionlint" -version | head -1
"$TOOLS/actionlint" -no-color .github/workflows/*.yml
echo "actionlint: .github/workflows/*.yml clean"
