#!/usr/bin/env bash
# Builds the container image from ops/Dockerfile with podman (daemonless, from Debian) and runs
# it: `outboxd --version`, `migrate` and `run` against a throwaway PostgreSQL on the host,
# delivering one email to smtp-sink, as uid 10001 on a read-only root file system.
#   ops/scripts/image-build.sh [TAG]        (make image; default TAG localhost/outboxd:dev)
# BASE (environment) is the Debian 12 base image; unset, one is made here with debootstrap
# (build/image/rootfs, kept) and imported as localhost/debian-base:12, for machines that reach
# Debian's package mirror but no image registry. Builds use --isolation chroot, which needs no
# cgroups. Where the OCI runtime cannot start containers (a sandbox that refuses setrlimit), the
# image's file system is run with chroot instead, said as such. Exit 0 when the email was sent.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-localhost/outboxd:dev}
for tool in podman debootstrap smtp-sink; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || { echo "image-build: $tool missing: apt-get install podman debootstrap postfix" >&2; exit 2; }
done
if [ -z "${BASE:-}" ]; then
  BASE=localhost/debian-base:12
  if ! podman image exists "$BASE"; then
    mkdir -p build/image
    [ -x build/image/rootfs/bin/sh ] \
      || debootstrap --variant=minbase bookworm build/image/rootfs http://deb.debian.org/debian >build/image/debootstrap.log
    tar -C build/image/rootfs -c . | podman import - "$BASE" >/dev/null
  fi
fi
t0=$(date +%s)
podman build --isolation chroot --build-arg "BASE=$BASE" -f ops/Dockerfile -t "$TAG" . >build/image-build.log 2>&1 \
  || { tail -n 20 build/image-build.log >&2; exit 1; }
echo "image-build: $TAG built in $(( $(date +%s) - t0 )) s from $BASE ($(podman image inspect -f '{{.Size}}' "$TAG") bytes)"

work=$(mktemp -d /tmp/outboxd-image.XXXXXX); chmod 755 "$work"; mkdir "$work/root"
sink_pid=
cleanup() {
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
  ops/scripts/pg-local.sh destroy "$work/pg" >/dev/null 2>&1 || true
  podman image unmount "$TAG" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
eval "$(ops/scripts/pg-local.sh start "$work/pg")"
url="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
sp=$(free_port); hp=$(free_port)
(cd "$work" && exec /usr/sbin/smtp-sink -u root -d "%M." "127.0.0.1:$sp" 64 >/dev/null 2>&1) & sink_pid=$!

# In the image: as its USER, read-only root. podman run when the runtime can, else chroot.
in_image() {
  if podman run --rm --cgroups=disabled --network host --read-only -e OUTBOXD_DATABASE_URL="$url" \
       -e OUTBOXD_SMTP_URL="smtp://127.0.0.1:$sp" -e OUTBOXD_SMTP_TLS=none -e OUTBOXD_SMTP_FROM=image@example.org \
       -e OUTBOXD_HTTP_LISTEN="127.0.0.1:$hp" "$TAG" --version >/dev/null 2>"$work/podman-run.err"; then
    timeout "$1" podman run --rm --cgroups=disabled --network host --read-only -e OUTBOXD_DATABASE_URL="$url" \
      -e OUTBOXD_SMTP_URL="smtp://127.0.0.1:$sp" -e OUTBOXD_SMTP_TLS=none -e OUTBOXD_SMTP_FROM=image@example.org \
      -e OUTBOXD_HTTP_LISTEN="127.0.0.1:$hp" "$TAG" "${@:2}"
  else
    mnt=$(podman image mount "$TAG")
    OUTBOXD_DATABASE_URL="$url" OUTBOXD_SMTP_URL="smtp://127.0.0.1:$sp" OUTBOXD_SMTP_TLS=none \
      OUTBOXD_SMTP_FROM=image@example.org OUTBOXD_HTTP_LISTEN="127.0.0.1:$hp" \
      unshare -m sh -c 'mount --bind "$0" "$1" && mount -o remount,bind,ro "$1" && shift && exec timeout "$@"' \
      "$mnt" "$work/root" "$1" chroot --userspec=10001:10001 "$work/root" /usr/bin/outboxd "${@:2}"
  fi
}
echo "image-build: $(in_image 30 --version)"
if [ -s "$work/podman-run.err" ]; then
  echo "image-build: podman run refused here ($(head -c 200 "$work/podman-run.err" | tr '\n' ' ')): ran the image's file system with chroot as 10001, read-only"
fi
in_image 60 migrate >/dev/null
psql -X -q -d "$url" -c "INSERT INTO outbox.messages (sender, recipients, subject, body_text)
  VALUES ('shop@example.com', ARRAY['image@example.com'], 'image check', 'sent by the image')"
in_image 8 run >"$work/run.log" 2>&1 || true
state=$(psql -X -A -t -d "$url" -c "SELECT state FROM outbox.messages")
if [ "$state" = sent ] && grep -lq "sent by the image" "$work"/*.* 2>/dev/null; then
  echo "image-build: PASS: migrate and run from the image delivered one email (uid 10001, read-only root)"
else
  echo "image-build: FAIL: the message is '$state'"; tail -n 20 "$work/run.log"; exit 1
fi
