#!/usr/bin/env bash
# Build pgvector into the local Postgres so the knowledge store's vector tests run on Postgres too.
# Debian bookworm has no pgvector package; its release source is vendored beside the project
# (../shared/vendor/pgvector-*.tar.gz, or PGVECTOR_TARBALL). Idempotent and quiet: it does nothing
# when the extension is already available, and says in one line why it cannot build otherwise
# (the tests then skip the vector cases and say so).
set -euo pipefail

pg_url="${1:-postgresql://postgres@127.0.0.1:5432/postgres}"
available=$(psql "$pg_url" -tAc "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'" 2>/dev/null || echo "")
if [ "$available" = "1" ]; then
  exit 0
fi

here="$(cd "$(dirname "$0")/.." && pwd)"
tarball="${PGVECTOR_TARBALL:-}"
if [ -z "$tarball" ]; then
  for candidate in "$here"/../shared/vendor/pgvector-*.tar.gz /work/shared/vendor/pgvector-*.tar.gz; do
    if [ -f "$candidate" ]; then tarball="$candidate"; break; fi
  done
fi
if [ -z "$tarball" ]; then
  echo "pgvector: no source tarball found (set PGVECTOR_TARBALL); Postgres vector tests will skip"
  exit 0
fi

major=$(pg_config --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
if ! dpkg -s "postgresql-server-dev-$major" >/dev/null 2>&1; then
  if ! (apt-get install -y -qq "postgresql-server-dev-$major" make gcc >/dev/null 2>&1 \
        || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "postgresql-server-dev-$major" make gcc >/dev/null 2>&1)); then
    echo "pgvector: could not install postgresql-server-dev-$major; Postgres vector tests will skip"
    exit 0
  fi
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar xzf "$tarball" -C "$build"
(cd "$build"/pgvector-* && make -s -j2 >/dev/null 2>&1 && make -s install >/dev/null 2>&1) \
  || { echo "pgvector: build failed; Postgres vector tests will skip"; exit 0; }
echo "pgvector: built from $(basename "$tarball")"
