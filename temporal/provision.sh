#!/usr/bin/env bash
# Brings a fresh machine to the point where `npm start` (--for start) or `npm test`
# (--for test) can run: node modules, OpenLDAP (slapd, ldap-utils), for tests also OpenSSH,
# Chromium, Request Tracker 5 and a reachable Postgres, and the Temporal CLI (built with
# `go install` when no binary is found).
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=start
[ "${1:-}" = "--for" ] && purpose="${2:-start}"
say() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

# 1. node modules (npm ci when missing or older than the lock file)
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing node modules (npm ci)"
  npm ci --no-fund --no-audit --loglevel=error
fi

# 2. Debian packages: OpenLDAP for the demo directory and the tests
apt_updated=0
apt_install() {
  [ "$apt_updated" = 1 ] || { as_root apt-get update -qq >/dev/null && apt_updated=1; }
  # policy-rc.d 101: the package must not start a system-wide slapd listening on every interface.
  as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  as_root rm -f /usr/sbin/policy-rc.d
}
if ! { [ -x /usr/sbin/slapd ] || command -v slapd >/dev/null; } || ! command -v ldapsearch >/dev/null; then
  if command -v apt-get >/dev/null && as_root true 2>/dev/null; then
    say "installing OpenLDAP (apt-get install slapd ldap-utils)"
    apt_install slapd ldap-utils
  elif [ "$purpose" = test ]; then
    echo "slapd/ldapsearch missing and cannot install them: apt-get install -y slapd ldap-utils" >&2; exit 1
  else
    say "OpenLDAP not installed: the demo runs without a directory (apt-get install -y slapd ldap-utils)"
  fi
fi

# OpenSSH server for the SSH certificate authority's end-to-end login test (tests only; the
# tests run their own sshd on 127.0.0.1, never the system service).
if [ "$purpose" = test ] && [ ! -x /usr/sbin/sshd ]; then
  if command -v apt-get >/dev/null && as_root true 2>/dev/null; then
    say "installing OpenSSH (apt-get install openssh-server openssh-client)"
    apt_install openssh-server openssh-client
  else
    echo "sshd missing and cannot install it: apt-get install -y openssh-server" >&2; exit 1
  fi
fi

# Chromium renders the API docs page in a test (headless, with a screenshot).
if [ "$purpose" = test ] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null && as_root true 2>/dev/null; then
    say "installing Chromium for the docs page test (apt-get install chromium)"
    apt_install chromium
  else
    echo "chromium missing and cannot install it: apt-get install -y chromium" >&2; exit 1
  fi
fi

# Request Tracker 5 as the service desk of the ticket integration tests (tests only; each run
# starts its own RT on 127.0.0.1 with its own config and SQLite file, test/helpers/rt.ts, never
# the system one). dbconfig gets its answers up front so the install asks nothing: an SQLite
# database for the package's own instance, no cron jobs. Without recommends (cron, rsyslog,
# S3/Dropbox attachment stores): 230 packages instead of 357, none needed here; w3m, which
# RT uses to turn HTML mail into text (and warns on every start without), is asked for by name.
if [ "$purpose" = test ] && { [ ! -x /usr/share/request-tracker5/libexec/rt-server ] || ! command -v w3m >/dev/null; }; then
  if command -v apt-get >/dev/null && as_root true 2>/dev/null; then
    say "installing Request Tracker 5 (apt-get install request-tracker5 rt5-db-sqlite rt5-standalone w3m; about a minute)"
    printf '%s\n' \
      'request-tracker5 request-tracker5/dbconfig-install boolean true' \
      'request-tracker5 request-tracker5/database-type select sqlite3' \
      'request-tracker5 request-tracker5/install-cronjobs boolean false' \
      'request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true' \
      | as_root debconf-set-selections
    apt_install --no-install-recommends request-tracker5 rt5-db-sqlite rt5-standalone w3m
  else
    echo "Request Tracker missing and cannot install it: apt-get install -y request-tracker5 rt5-db-sqlite rt5-standalone w3m" >&2; exit 1
  fi
fi

# 3. Postgres for the integration tests (TEST_DATABASE_URL, default the local cluster)
if [ "$purpose" = test ]; then
  url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
  if ! psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
    if command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
      say "starting the local PostgreSQL cluster"
      as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    fi
    for _ in $(seq 1 30); do psql "$url" -Atqc 'select 1' >/dev/null 2>&1 && break; sleep 1; done
    psql "$url" -Atqc 'select 1' >/dev/null 2>&1 || {
      echo "no PostgreSQL at ${url%%@*}@…: start one or set TEST_DATABASE_URL" >&2; exit 1; }
  fi
fi

# 4. The Temporal CLI (dev server): TEMPORAL_CLI_PATH → PATH → .cache/bin → go install
if [ -z "${TEMPORAL_ADDRESS:-}" ] || [ "$purpose" = test ]; then
  npx --no-install tsx temporal/ensure-cli.ts
fi
