#!/usr/bin/env bash
# Make sure a PostgreSQL server answers at 127.0.0.1:5432 with trust auth for
# user postgres (the tests create and drop their own databases there).
# Starts an installed cluster, or installs Debian's postgresql if there is none.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

if command -v pg_isready >/dev/null 2>&1 && ready; then
  echo "postgres: reachable at 127.0.0.1:5432"
  exit 0
fi
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba="/etc/postgresql/$version/main/pg_hba.conf"
if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
  echo "postgres: enabling trust auth on 127.0.0.1 (test machine only)"
  $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
fi
echo "postgres: starting cluster $version/main"
$SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || \
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
for _ in $(seq 1 30); do ready && { echo "postgres: ready"; exit 0; }; sleep 1; done
echo "postgres: not reachable at 127.0.0.1:5432 after 30 s" >&2
exit 1
