#!/usr/bin/env bash
# System packages, by what needs them. Installs only what is missing, as root with apt; anyone
# else gets one line saying what to install (and runs on without it).
#   bash .ci/system-deps.sh [GROUP...]   (default: every group)
# Groups:
#   modes    what the real modes need: a Docker engine, debootstrap for the registry-free node
#            images, an SSH client and rsync for `ray up` over SSH, gcc and a static libc for
#            the kind toolchain's pause binary (Go itself comes with the machine)
#   picture  chromium, for the dashboard picture in the report (`make conformance` asks only this)
set -euo pipefail
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(modes picture)
need=()
without=()  # what is lost while they are missing
for group in "${groups[@]}"; do
  before=${#need[@]}
  case "$group" in
    modes)
      if ! command -v python3 >/dev/null; then
        need+=(python3 python3-venv)
      elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        need+=(python3-venv)
      fi
      command -v make >/dev/null || need+=(make)
      command -v dockerd >/dev/null || need+=(docker.io)
      command -v debootstrap >/dev/null || need+=(debootstrap)
      command -v ssh >/dev/null || need+=(openssh-client)
      command -v rsync >/dev/null || need+=(rsync)
      command -v gcc >/dev/null || need+=(gcc)
      [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
      [ ${#need[@]} -eq "$before" ] || without+=("the modes that need them are skipped")
      ;;
    picture)
      command -v chromium >/dev/null || need+=(chromium)
      [ ${#need[@]} -eq "$before" ] || without+=("the report has no dashboard picture")
      ;;
    *)
      echo "system-deps: unknown group '$group' (known: modes, picture)" >&2
      exit 2
      ;;
  esac
done
if [ ${#need[@]} -eq 0 ]; then
  echo "system-deps: all present (${groups[*]})"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  reasons=$(IFS=';'; echo "${without[*]}")
  echo "system-deps: missing ${need[*]}; install with \`sudo apt-get install ${need[*]}\` (until then ${reasons//;/; })" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
