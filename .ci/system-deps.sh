#!/usr/bin/env bash
# System packages the real modes need: a Docker engine, debootstrap for the registry-free node
# images, an SSH client and rsync for `ray up` over SSH, gcc and a static libc for the kind
# toolchain's pause binary (Go itself comes with the machine), chromium for the report's
# dashboard screenshot. Installs only what is missing.
set -euo pipefail
need=()
command -v python3 >/dev/null || need+=(python3 python3-venv)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v make >/dev/null || need+=(make)
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ssh >/dev/null || need+=(openssh-client)
command -v rsync >/dev/null || need+=(rsync)
command -v gcc >/dev/null || need+=(gcc)
command -v chromium >/dev/null || need+=(chromium)  # the dashboard screenshot in the report
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -eq 0 ]; then
  echo "system-deps: all present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${need[*]}; install them (as root, with apt-get) or the modes that need them are skipped" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
