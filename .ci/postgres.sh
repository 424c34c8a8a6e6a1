#!/usr/bin/env bash
# Installs PostgreSQL 15 from Debian's packages (if absent) and starts a throwaway server on loopback.
# Prints the URL to use as SKILLMEM_TEST_PG_URL. Idempotent: a server already listening is reused.
set -euo pipefail
PORT=${SKILLMEM_PG_PORT:-55432}
DATA=${SKILLMEM_PG_DATA:-/tmp/skillmem-pg-$PORT}
BIN=/usr/lib/postgresql/15/bin
if [ ! -x "$BIN/postgres" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql-15 >&2
fi
URL="postgresql+psycopg://skillmem:skillmem@127.0.0.1:$PORT/skillmem"
if runuser -u postgres -- "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
  echo "$URL"; exit 0
fi
rm -rf "$DATA"; mkdir -p "$DATA"; chown postgres "$DATA"
runuser -u postgres -- "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
runuser -u postgres -- "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$DATA -c max_connections=200 -c fsync=off" start >&2
runuser -u postgres -- "$BIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres \
  -c "CREATE ROLE skillmem LOGIN PASSWORD 'skillmem' CREATEDB" -c "CREATE DATABASE skillmem OWNER skillmem" >&2
echo "$URL"
