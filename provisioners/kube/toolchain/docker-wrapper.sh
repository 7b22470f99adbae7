#!/bin/bash
# `docker` for kind on hosts where `--privileged` cannot work. Stock kind hard-codes
# `docker run --privileged` and `docker exec --privileged`; where the capability bounding set
# lacks a capability (CAP_SYS_RESOURCE on our CI machines) runc fails with "unable to apply
# caps". There, and only there, `--privileged` becomes its spelled-out equivalent minus the
# missing capabilities. A `/lib/modules` bind mount is dropped when the host has no
# /lib/modules (Docker refuses a missing bind source). Everything else passes through untouched
# to the real docker, the next one on PATH after this script's directory.
set -euo pipefail

self_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
real=""
IFS=: read -r -a path_dirs <<<"${PATH}"
for d in "${path_dirs[@]}"; do
  [ -n "$d" ] || continue
  [ "$(cd "$d" 2>/dev/null && pwd -P)" = "$self_dir" ] && continue
  if [ -x "$d/docker" ]; then real="$d/docker"; break; fi
done
[ -n "$real" ] || { echo "docker wrapper: no real docker on PATH after $self_dir" >&2; exit 127; }

# Capability names by number (linux/capability.h), for the ones the bounding set lacks.
caps=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
  LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
  SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
  SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
  MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
  CHECKPOINT_RESTORE)
bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
missing=()
for i in "${!caps[@]}"; do
  if (( ((16#$bnd) >> i & 1) == 0 )); then missing+=("${caps[$i]}"); fi
done
have_modules=1
[ -d /lib/modules ] || have_modules=0

cmd=${1:-}
if [ "$cmd" != run ] && [ "$cmd" != exec ]; then exec "$real" "$@"; fi
if [ ${#missing[@]} -eq 0 ] && [ $have_modules -eq 1 ]; then exec "$real" "$@"; fi

out=("$cmd")
shift
opts_done=0
while [ $# -gt 0 ]; do
  a=$1
  shift
  if [ $opts_done -eq 1 ]; then out+=("$a"); continue; fi
  case "$a" in
    --privileged|--privileged=true)
      if [ ${#missing[@]} -eq 0 ]; then out+=("$a"); continue; fi
      if [ "$cmd" = run ]; then
        out+=(--cap-add ALL)
        for c in "${missing[@]}"; do out+=(--cap-drop "$c"); done
        for opt in seccomp=unconfined apparmor=unconfined systempaths=unconfined; do
          [[ " ${out[*]} ${*} " == *" $opt "* ]] || out+=(--security-opt "$opt")
        done
        out+=(--device-cgroup-rule 'a *:* rwm')
        [ -e /dev/kmsg ] && out+=(--device /dev/kmsg)
        if [ -e /dev/fuse ] && [[ " ${out[*]} ${*} " != *" /dev/fuse "* ]]; then
          out+=(--device /dev/fuse)
        fi
      fi
      # exec: a process started by `docker exec` gets the container's own capabilities,
      # seccomp and device rules, which already equal --privileged minus the missing caps.
      ;;
    --volume|-v)
      v=${1:-}
      shift || true
      if [ $have_modules -eq 0 ] && [[ "$v" == /lib/modules:* ]]; then continue; fi
      out+=("$a" "$v")
      ;;
    --volume=/lib/modules:*|-v=/lib/modules:*)
      [ $have_modules -eq 0 ] || out+=("$a")
      ;;
    --device)
      # kind adds /dev/fuse itself on some hosts: do not pass it twice.
      v=${1:-}
      shift || true
      [ "$v" = /dev/fuse ] && [[ " ${out[*]} " == *" /dev/fuse "* ]] && continue
      out+=("$a" "$v")
      ;;
    -e|--env|-u|--user|-w|--workdir|--env-file|--detach-keys|--name|--hostname|--label|-l|--security-opt|--tmpfs|--net|--network|--ip|--ip6|--publish|-p|--restart|--cgroupns|--sysctl|--userns|--mount|--cap-add|--cap-drop|--device-cgroup-rule|--entrypoint)
      out+=("$a")
      if [ $# -gt 0 ]; then out+=("$1"); shift; fi
      ;;
    -*) out+=("$a") ;;
    *)
      # First non-option: the image (run) or container (exec); the rest is its command.
      out+=("$a")
      opts_done=1
      ;;
  esac
done
exec "$real" "${out[@]}"
