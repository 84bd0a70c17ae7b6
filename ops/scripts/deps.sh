#!/usr/bin/env bash
# Installs, from Debian's packages, every system package that outboxd's build and tests need.
# Idempotent: when everything is present it only checks and returns in well under a second.
set -euo pipefail

PKGS=(
  build-essential pkg-config
  libpq-dev libevent-dev libcurl4-openssl-dev libjansson-dev libcyaml-dev librdkafka-dev
  postgresql postgresql-15 postgresql-contrib postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
  postfix kcat openssl python3 python3-aiosmtpd python3-pytest python3-psycopg2 python3-yaml
  valgrind procps iproute2 curl prometheus
  default-jre-headless maven
)
# Each area adds its own packages on its own line, so additions stay independent.
PKGS+=(postgresql-15-auto-failover)  # faults and failover
PKGS+=()  # go-live kit
PKGS+=(python3-venv)  # drills, image, manifests (the strict validator's venv), audit
PKGS+=(chromium chromium-driver python3-selenium)  # console and browser tests
PKGS+=()  # retention and volume
PKGS+=(libssl-dev)  # native SMTP engine: OpenSSL through libevent_openssl
PKGS+=( clang-format cppcheck )  # style checks

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Packages such as postfix and postgresql would start system services on install; outboxd's
# tests start their own throwaway instances, so keep the system ones from starting.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  added_policy=1
fi
trap '[ "$added_policy" = 1 ] && $SUDO rm -f "$policy"' EXIT

echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string localhost" | $SUDO debconf-set-selections

$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
