#!/usr/bin/env bash
# Start a Docker engine for the docker/vm modes when none answers, and stop only the one we
# started. Usage: .ci/docker-engine.sh start|stop|status. Idempotent both ways.
#
# `start` leaves an engine that was already running alone (Docker Desktop, a system service, a
# dockerd started by hand) and records nothing, so `stop` never touches it. When it starts one,
# the pid goes to $PIDFILE and `stop` ends exactly that process.
set -euo pipefail

PIDFILE="${RC_DOCKERD_PIDFILE:-/run/ray-conformance-dockerd.pid}"
LOGFILE="${RC_DOCKERD_LOG:-/var/log/ray-conformance-dockerd.log}"
WAIT_S="${RC_DOCKERD_WAIT_S:-60}"
# Extra dockerd flags, word-split (used to test this script beside a running engine).
DOCKERD_ARGS="${RC_DOCKERD_ARGS:-}"

say() { echo "docker-engine: $*"; }

engine_answers() {
  command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1
}

# The pid in $PIDFILE, if that process is still a dockerd (pids get reused).
our_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

install_missing() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v docker >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "missing ${need[*]} and cannot apt-get install as non-root; docker modes will be skipped" >&2
    return 1
  fi
  say "installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u)
}

start() {
  if engine_answers; then
    say "an engine already answers; leaving it alone"
    return 0
  fi
  install_missing || return 0
  if pid="$(our_pid)"; then
    say "dockerd $pid (ours) is starting already"
  else
    say "starting dockerd (log: $LOGFILE)"
    mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$LOGFILE")"
    # shellcheck disable=SC2086
    nohup dockerd $DOCKERD_ARGS >>"$LOGFILE" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
  fi
  local waited=0
  until engine_answers; do
    if ! our_pid >/dev/null; then
      say "dockerd exited while starting; last log lines:" >&2
      tail -n 20 "$LOGFILE" >&2 || true
      rm -f "$PIDFILE"
      return 1
    fi
    if [ "$waited" -ge "$WAIT_S" ]; then
      say "timed out after ${WAIT_S} s waiting for \`docker info\` to answer; last log lines:" >&2
      tail -n 20 "$LOGFILE" >&2 || true
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "engine up in ${waited} s (dockerd $(cat "$PIDFILE"))"
}

stop() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PIDFILE"
    say "no dockerd started by this script is running"
    return 0
  fi
  say "stopping dockerd $pid"
  kill -TERM "$pid"
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "dockerd $pid still running after 30 s; sending SIGKILL" >&2
    kill -KILL "$pid" || true
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if engine_answers; then say "engine answers"; else say "no engine answers"; fi
    if pid="$(our_pid)"; then say "started by this script: dockerd $pid"; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
