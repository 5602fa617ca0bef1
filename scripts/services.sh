#!/usr/bin/env bash
# Make sure the brokers the tests talk to are up, with what the tests need enabled.
# Idempotent: a service already in the right state is left alone.
set -euo pipefail

log() { echo "services: $*" >&2; }

# RabbitMQ on 127.0.0.1:5672 (guest/guest), with the management API on :15672 and the shovel
# plugin (the redrive benchmark compares against a dynamic shovel).
rabbitmq() {
  local plugins=(rabbitmq_management rabbitmq_shovel rabbitmq_shovel_management)
  if ! command -v rabbitmq-server >/dev/null; then
    log "installing rabbitmq-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if rabbitmqctl -q status >/dev/null 2>&1; then
    rabbitmq-plugins -q enable "${plugins[@]}" >/dev/null
  else
    rabbitmq-plugins -q enable --offline "${plugins[@]}" >/dev/null
    log "starting rabbitmq-server"
    rabbitmq-server -detached
    for _ in $(seq 1 120); do
      rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  for _ in $(seq 1 120); do
    if curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  log "the RabbitMQ management API on 127.0.0.1:15672 did not come up"
  return 1
}

# PostgreSQL on 127.0.0.1:5432, for the fleet tests (two agents sharing one store). The machine
# runs it with trust auth for local connections; each test makes and drops its own database.
postgres() {
  if ! command -v pg_isready >/dev/null; then
    log "installing postgresql"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting postgresql"
    (service postgresql start || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start) >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 60); do
    if psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
      return 0
    fi
    sleep 1
  done
  log "PostgreSQL on 127.0.0.1:5432 does not take user postgres (set QMEDIC_TEST_POSTGRES for another server)"
  return 1
}

# A Kafka-protocol broker on 127.0.0.1:9092: tansu (a Kafka-compatible broker written in Rust),
# built once from crates.io into a per-machine cache (about 10 minutes on 2 cores) and run with
# its in-memory storage engine, so every start is an empty cluster.
kafka() {
  local tools="${QMEDIC_TOOLS_DIR:-$HOME/.cache/qmedic/tools}"
  local tansu="$tools/bin/tansu"
  if (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
    return 0
  fi
  if [ ! -x "$tansu" ]; then
    log "building tansu 0.6 from crates.io into $tools (once per machine)"
    cargo install --quiet --locked --root "$tools" --version '~0.6' --features dynostore tansu
  fi
  log "starting tansu on 127.0.0.1:9092"
  mkdir -p "$tools/log"
  setsid nohup "$tansu" broker --storage-engine memory://tansu/ \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    >"$tools/log/tansu.log" 2>&1 &
  for _ in $(seq 1 60); do
    if (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  log "tansu did not listen on 127.0.0.1:9092; see $tools/log/tansu.log"
  return 1
}

rabbitmq
kafka
if [ -z "${QMEDIC_TEST_POSTGRES:-}" ]; then
  postgres
fi
