#!/usr/bin/env bash
# Run a command with a Docker engine answering: start one if none does (see docker-engine.sh)
# and stop it afterwards only if this invocation started it, also on failure or Ctrl-C.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pidfile="${RC_DOCKERD_PIDFILE:-/run/ray-conformance-dockerd.pid}"
owned_before=0
[ -f "$pidfile" ] && owned_before=1
bash "$here/docker-engine.sh" start || echo "with-docker-engine: no engine; docker modes will be skipped" >&2
if [ "$owned_before" = 0 ] && [ -f "$pidfile" ]; then
  trap 'bash "$here/docker-engine.sh" stop' EXIT
fi
"$@"
