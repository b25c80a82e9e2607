#!/usr/bin/env bash
# Builds the CPU image (deploy/Dockerfile) from this repository with podman,
# in one command:  deploy/build_image.sh [--tag NAME] [--jobs N]
# The debian:bookworm base is pulled when a registry answers; otherwise it is
# made here with debootstrap from the Debian mirror this machine's apt uses
# (or $GQA_DEBIAN_MIRROR) and imported into podman's storage, where it stays:
# later runs reuse it, and podman's layer cache makes an unchanged rebuild take
# seconds. Needs root (debootstrap, rootful podman).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=gqa-server:cpu
jobs=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "build_image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
base=docker.io/library/debian:bookworm
command -v podman >/dev/null || { echo "build_image.sh: podman is not installed" >&2; exit 1; }
# Containers here run under runc with lowered limits (crun fails on these
# machines: it cannot raise RLIMIT_NOFILE, nor use hybrid cgroups).
if ! command -v runc >/dev/null && ! [ -x /usr/sbin/runc ]; then
  echo "== installing runc"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends runc >/dev/null
fi
run_opts=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1000:1000)

debian_mirror() {
  [ -n "${GQA_DEBIAN_MIRROR:-}" ] && { echo "$GQA_DEBIAN_MIRROR"; return; }
  local m
  # deb822 files first (URIs: ...), then one-line lists (deb URL suite ...); the first Debian archive that is not security.
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { print $2 }' | grep -v security | grep -m1 debian || true)
  [ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                     | awk '$1 == "deb" { print $2 }' | grep -v security | grep -m1 debian || true)
  echo "${m:-http://deb.debian.org/debian}"
}

rootfs=
cleanup() {
  # debootstrap mounts /proc and /sys inside while it works: unmount them
  # before removing, and never cross into another file system.
  [ -n "$rootfs" ] || return 0
  umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
  rm -rf --one-file-system "$rootfs"
}
trap cleanup EXIT

make_base() {
  local mirror
  mirror=$(debian_mirror)
  command -v debootstrap >/dev/null || { echo "build_image.sh: no registry and no debootstrap to make $base" >&2; exit 1; }
  rootfs=$(mktemp -d /var/tmp/gqa-bookworm.XXXXXX)
  echo "== making $base with debootstrap from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  # The sources Debian's own image has: the release, its updates and security.
  cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb ${mirror} bookworm main
deb ${mirror} bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SOURCES
  # As in Debian's image: no recommends, no cached package files.
  printf 'APT::Install-Recommends "false";\n' > "$rootfs/etc/apt/apt.conf.d/90gqa-no-recommends"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" --numeric-owner --one-file-system -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
}

start=$(date +%s)
if podman image exists "$base"; then
  echo "== $base: cached in podman's storage"
elif podman pull -q "$base" >/dev/null 2>&1; then
  echo "== $base: pulled"
else
  make_base
fi
echo "== base ready after $(( $(date +%s) - start )) s"

# --network host: the build stage installs Debian packages with apt.
# Docker format: the OCI format has no SHELL, and the Dockerfiles rely on
# SHELL for pipefail.
podman build "${run_opts[@]}" --format docker --network host --pull=never \
  --build-arg BUILD_JOBS="$jobs" -f deploy/Dockerfile -t "$tag" .
echo "== built $tag in $(( $(date +%s) - start )) s"
