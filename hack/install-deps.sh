#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine: database servers and
# clients from Debian's packages, and prometheus for promtool (the chart's alert rules are
# checked and unit-tested with it: test/e2e/alerts_test.go). Idempotent and quiet when
# everything is already there.
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in postgresql postgresql-client postgresql-contrib mariadb-server mariadb-client sysbench prometheus ${EXTRA_DEBS:-}; do
  have "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's mariadb-server starts a server of its own where it can; the harness runs private ones.
if command -v mariadb-admin >/dev/null 2>&1 && [ -S /run/mysqld/mysqld.sock ]; then
  (service mariadb stop || mariadb-admin --socket=/run/mysqld/mysqld.sock shutdown) >/dev/null 2>&1 || true
fi
# Debian's prometheus package starts a server (port 9090, the sidecar's default admin port) where
# it can; only promtool is wanted.
if [ -x /etc/init.d/prometheus ] && pgrep -x prometheus >/dev/null 2>&1; then
  (service prometheus stop || true) >/dev/null 2>&1
fi
# Debian's postgresql package starts a cluster of its own; the harness runs private servers and
# needs none, so stop it if an install just started one (it would hold port 5432).
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters -h 2>/dev/null | awk '$4=="online"{print $1, $2}' | while read -r v c; do
    pg_ctlcluster "$v" "$c" stop || true
  done
fi
