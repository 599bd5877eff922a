#!/usr/bin/env bash
# Provisioning step for the cluster test (test/integration/cluster.test.ts) and `npm run
# cluster:up`: builds and caches the Temporal server and SQL tool (3-6 minutes, once), so the
# build does not run inside a test's time budget. Quiet and instant when they are cached.
set -euo pipefail
exec bash "$(dirname "$0")/cluster.sh" build
