#!/usr/bin/env sh
# An iotcore device in a shell script: readings over HTTP with curl, each with a msgId and a sequence number.
# A reading counts as delivered on `202 Accepted` (sent once it is durably queued); anything else but a
# refusal (4xx) is retried with the same body and the same Idempotency-Key until it is, so an outage delays
# readings but loses none, and a retry of one that did arrive is stored once.
#
#   examples/curl/send.sh -u http://localhost:8080 -i $ID -t $TOKEN [-n 100] [-s 1]
#   (or IOTCORE_URL, IOTCORE_DEVICE_ID, IOTCORE_DEVICE_TOKEN in the environment)
set -eu
url=${IOTCORE_URL:-http://localhost:8080}
id=${IOTCORE_DEVICE_ID:-}
token=${IOTCORE_DEVICE_TOKEN:-}
count=0
interval=1
while getopts "u:i:t:n:s:" opt; do
  case $opt in
    u) url=$OPTARG ;;
    i) id=$OPTARG ;;
    t) token=$OPTARG ;;
    n) count=$OPTARG ;;
    s) interval=$OPTARG ;;
    *) echo "usage: $0 -i ID -t TOKEN [-u URL] [-n COUNT] [-s SECONDS]" >&2; exit 2 ;;
  esac
done
if [ -z "$id" ] || [ -z "$token" ]; then
  echo "usage: $0 -i ID -t TOKEN [-u URL] [-n COUNT] [-s SECONDS]" >&2
  exit 2
fi

boot=$(date +%s%3N)
seq=0
while [ "$count" -eq 0 ] || [ "$seq" -lt "$count" ]; do
  seq=$((seq + 1))
  body=$(printf '{"ts":%s,"msgId":"%s-%s","seq":%s,"lat":%s,"lon":23.72,"speed":%s}' \
    "$(date +%s%3N)" "$boot" "$seq" "$seq" "$(awk "BEGIN{printf \"%.6f\", 37.98 + $seq * 0.0001}")" "$((40 + seq % 30))")
  wait=1
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "$url/api/v1/devices/$id/telemetry" \
      -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -H "idempotency-key: $boot-$seq" -d "$body" || true)
    case $code in
      202) echo "acked seq=$seq"; break ;;
      4[0-9][0-9])
        # 409: the same key is being answered right now; 429: slow down. Both are worth a retry.
        if [ "$code" != 409 ] && [ "$code" != 429 ]; then echo "refused seq=$seq: HTTP $code" >&2; exit 1; fi ;;
    esac
    echo "seq $seq: ${code:-no answer}; retrying in $wait s" >&2
    sleep "$wait"
    [ "$wait" -lt 5 ] && wait=$((wait + 1))
  done
  [ "$count" -ne 0 ] && [ "$seq" -ge "$count" ] || sleep "$interval"
done
echo "done: $seq readings acked"
