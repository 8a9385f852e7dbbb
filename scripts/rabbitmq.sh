#!/usr/bin/env bash
# Starts or stops a private RabbitMQ node (Debian's rabbitmq-server) for tests and the chaos suite, without
# systemd: as the rabbitmq user, its state in DIR, on loopback only.
#   scripts/rabbitmq.sh start DIR PORT [DIST_PORT]   prints the AMQP URL once the node is up
#   scripts/rabbitmq.sh stop DIR
# DIST_PORT is the Erlang distribution port (RabbitMQ's default: PORT + 20000, which is not a port at all when
# PORT comes from the kernel's ephemeral range above 45535; callers that pick free ports pass one).
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
    dist_port=${4:-$((port + 20000))}
    for p in "$port" "$dist_port"; do
      if [ "$p" -lt 1 ] || [ "$p" -gt 65535 ]; then echo "not a TCP port: $p (pass DIST_PORT)" >&2; exit 2; fi
    done
    env_vars+=(RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist_port")
    # Two tries of up to 90 s each by the clock: a node can lose a race with epmd on a busy machine; the second
    # start is then clean. A failed try prints the node's log, so CI shows why.
    for try in 1 2; do
      as_rabbit rabbitmq-server -detached >/dev/null 2>&1 || true
      deadline=$((SECONDS + 90))
      while [ "$SECONDS" -lt "$deadline" ]; do
        if as_rabbit rabbitmqctl -n "$node" --timeout 15 await_startup >/dev/null 2>&1; then
          echo "amqp://guest:guest@127.0.0.1:$port"
          exit 0
        fi
        sleep 1
      done
      as_rabbit rabbitmqctl -n "$node" stop >/dev/null 2>&1 || true
      if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; fi
      echo "RabbitMQ did not start (try $try); its log:" >&2
      tail -n 30 "$dir"/log/*.log >&2 2>/dev/null || true
    done
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
