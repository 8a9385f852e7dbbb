#!/usr/bin/env bash
# Starts or stops a private RabbitMQ node (Debian's rabbitmq-server) for tests and the chaos suite, without
# systemd: as the rabbitmq user, its state in DIR, on loopback only.
#   scripts/rabbitmq.sh start DIR PORT   prints the AMQP URL once the node is up
#   scripts/rabbitmq.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?state dir}
mkdir -p "$dir"
chown rabbitmq: "$dir" 2>/dev/null || true
chmod o+x "$dir"
node="iotcore-$(basename "$dir")@localhost"
env_vars=(
  RABBITMQ_NODENAME="$node"
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  RABBITMQ_MNESIA_BASE="$dir/mnesia"
  RABBITMQ_LOG_BASE="$dir/log"
  RABBITMQ_PID_FILE="$dir/pid"
  ERL_EPMD_ADDRESS=127.0.0.1
)
as_rabbit() { su rabbitmq -s /bin/sh -c "$(printf '%q ' env "${env_vars[@]}" "$@")"; }
case "$cmd" in
  start)
    port=${3:?port}
    env_vars+=(RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$((port + 20000))")
    # Two tries: a node can lose a race with epmd on a busy machine; the second start is then clean.
    for try in 1 2; do
      as_rabbit rabbitmq-server -detached >/dev/null 2>&1 || true
      for _ in $(seq 1 90); do
        if as_rabbit rabbitmqctl -n "$node" await_startup >/dev/null 2>&1; then
          echo "amqp://guest:guest@127.0.0.1:$port"
          exit 0
        fi
        sleep 1
      done
      as_rabbit rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
      if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; fi
      echo "RabbitMQ did not start (try $try)" >&2
    done
    tail -n 30 "$dir"/log/*.log >&2 2>/dev/null || true
    exit 1
    ;;
  stop)
    as_rabbit rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
    if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; fi
    # epmd outlives the node; stop it unless another node still uses it
    # (-f: a zombie beam has no command line, so it does not count)
    if ! pgrep -u rabbitmq -f beam.smp >/dev/null; then pkill -u rabbitmq epmd 2>/dev/null || true; fi
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
