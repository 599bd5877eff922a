#!/usr/bin/env bash
# `npm test`: set up what the suite needs, then lint, typecheck and run every test
# (unit, replay, integration and e2e against real Temporal, Postgres and slapd).
set -euo pipefail
cd "$(dirname "$0")/.."
bash temporal/provision.sh --for test
# The multi-process Temporal cluster's server and SQL tool (test/integration/cluster.test.ts): built once, cached.
bash temporal/cluster/provision.sh
echo "[test] lint (layer zones, eslint.config.js) and typecheck"
npx --no-install eslint .
npx --no-install tsc --noEmit -p .
echo "[test] vitest"
exec npx --no-install vitest run "$@"
