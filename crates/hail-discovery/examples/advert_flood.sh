#!/bin/sh
# Issue 11's flood goal on real sockets (docs/security.md, "Floods of forged adverts"):
# three namespaces of our own on a bridge of our own (10.78.0.0/24): h0 floods (advert_flood,
# pinned to core 0), h1 runs `hail listen --name target` (pinned to core 1), h2 runs
# `hail listen --name witness` (joined before the flood, it must stay so) and asks the
# target (a new device joining each time) before, during and after the flood. Prints the
# target's CPU over the flood (utime+stime from /proc/PID/stat), its RSS, and each ask's
# time and outcome, with the load average beside them. Root only; removes its namespaces on exit.
#
#   cargo build --release -p hail-cli --bin hail
#   cargo build --release -p hail-discovery --example advert_flood
#   sh crates/hail-discovery/examples/advert_flood.sh [SECS] [RATE] [SOURCES]
#
# SECS (default 20), RATE (default 20000) and SOURCES (fresh or pool:N, default fresh) go
# to advert_flood.
set -eu
SECS=${1:-20}
RATE=${2:-20000}
SOURCES=${3:-fresh}
HAIL=${HAIL:-target/release/hail}
FLOOD=${FLOOD:-target/release/examples/advert_flood}
P=floodm-
OUT=${OUT:-target/advert_flood}
mkdir -p "$OUT"

cleanup() {
    [ -n "${TARGET:-}" ] && kill "$TARGET" 2>/dev/null || true
    [ -n "${WITNESS:-}" ] && kill "$WITNESS" 2>/dev/null || true
    for n in h0 h1 h2 br; do ip netns del "$P$n" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

echo "start: $(date -u +%FT%TZ), $(uptime)"
ip netns add ${P}br
ip -n ${P}br link add br0 type bridge mcast_snooping 0
ip -n ${P}br link set br0 up
for i in 0 1 2; do
    ip netns add $P"h$i"
    ip -n $P"h$i" link set lo up
    ip -n ${P}br link add "v$i" type veth peer name eth0 netns $P"h$i"
    ip -n ${P}br link set "v$i" master br0 up
    ip -n $P"h$i" link set eth0 up
    ip -n $P"h$i" addr add "10.78.0.$((i + 1))/24" dev eth0
    ip -n $P"h$i" route add 224.0.0.0/4 dev eth0
done

ask() { # $1: label
    t0=$(date +%s.%N)
    if ip netns exec ${P}h2 "$HAIL" --interface eth0 --json ask target "ping $1" \
        >"$OUT/ask-$1.json" 2>"$OUT/ask-$1.err"; then ok=ok; else ok=FAILED; fi
    t1=$(date +%s.%N)
    echo "ask $1: $ok in $(echo "$t1 - $t0" | bc) s: $(head -c 200 "$OUT/ask-$1.json")" | tee -a "$OUT/asks"
}
cpu() { # utime + stime of the target, in clock ticks
    awk '{print $14 + $15}' "/proc/$TARGET/stat"
}
waited() { # time the target's threads were runnable but not running (other load), in s
    cat /proc/"$TARGET"/task/*/schedstat | awk '{w += $2} END {printf "%.3f\n", w / 1e9}'
}
udp() { ip netns exec ${P}h1 awk '/^Udp:/ {getline; print "UDP in " $2 ", receive buffer errors " $6}' /proc/net/snmp; }
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$TARGET/status"; }

ip netns exec ${P}h1 taskset -c 1 "$HAIL" --interface eth0 --json -v listen --name target \
    >"$OUT/target.json" 2>"$OUT/target.err" &
TARGET=$!
# A device joined before the flood: it must stay joined, neither dropped nor ambiguous.
ip netns exec ${P}h2 "$HAIL" --interface eth0 --json listen --name witness \
    >"$OUT/witness.json" 2>"$OUT/witness.err" &
WITNESS=$!
n=0
while ! grep -q '"event":"joined".*"name":"witness"' "$OUT/target.json" 2>/dev/null; do
    n=$((n + 1)); [ $n -gt 100 ] && { echo "the witness never joined"; exit 1; }
    sleep 0.1
done
sleep 1
for k in 1 2 3; do ask "quiet$k"; done
echo "target RSS before: $(rss)"

# A flood.err of an earlier run would end the wait below at once.
: >"$OUT/flood.err"
: >"$OUT/asks"
ip netns exec ${P}h0 taskset -c 0 "$FLOOD" --rate "$RATE" --secs "$SECS" --sources "$SOURCES" \
    --subnet 10.78.0 >"$OUT/flood.out" 2>"$OUT/flood.err" &
FLOODER=$!
# The keys are made first; the flood starts with the line saying so.
while ! grep -q flooding "$OUT/flood.err" 2>/dev/null; do sleep 0.2; done
c0=$(cpu); s0=$(date +%s.%N)
echo "target at the flood's start: $(udp)"
# The CPU window: the flood's first SECS-1 seconds (asks may outlast the flood).
(sleep $((SECS - 1)); cpu >"$OUT/c1"; date +%s.%N >"$OUT/s1") &
WINDOW=$!
# The target's CPU, its wait for a core and its UDP counters every 5 s of the flood.
(while kill -0 "$FLOODER" 2>/dev/null; do echo "$(date +%s.%N) $(cpu) $(waited) $(udp)"; sleep 5; done \
    >"$OUT/cpu.samples") &
SAMPLER=$!
sleep 3
k=1
while kill -0 "$FLOODER" 2>/dev/null; do
    ask "flood$k"
    k=$((k + 1))
    sleep 3
done
wait "$FLOODER" || true
wait "$WINDOW"
wait "$SAMPLER"
c1=$(cat "$OUT/c1"); s1=$(cat "$OUT/s1")
cat "$OUT/flood.err" "$OUT/flood.out"
echo "target RSS after: $(rss); $(udp)"
awk -v hz="$(getconf CLK_TCK)" 'NR > 1 { printf "target at %5.1f s: %.3f cores, waiting for a core %.3f of the time, UDP in %d, receive buffer errors %d\n",
    $1 - t0, ($2 - p) / hz / ($1 - t), ($3 - w) / ($1 - t), $6 - u, $10 - e }
    NR == 1 { t0 = $1 } { t = $1; p = $2; w = $3; u = $6; e = $10 }' "$OUT/cpu.samples"
echo "target CPU over the flood: $(echo "scale=3; ($c1 - $c0) / $(getconf CLK_TCK) / ($s1 - $s0)" | bc) cores ($((c1 - c0)) ticks in $(echo "$s1 - $s0" | bc) s)"
awk -v hz="$(getconf CLK_TCK)" 'NR > 1 && $1 > t + 1 { c = ($2 - p) / hz / ($1 - t); if (c > m) m = c }
    { t = $1; p = $2 } END { printf "target CPU, busiest 5 s of the flood: %.3f cores\n", m }' "$OUT/cpu.samples"
grep '^ask flood' "$OUT/asks" | awk '{ n++; if ($3 == "ok") { ok++; if (ok == 1 || $5 < lo) lo = $5; if ($5 > hi) hi = $5 } }
    END { printf "asks during the flood: %d of %d ok", ok, n; if (ok) printf ", %.3f to %.3f s", lo, hi; print "" }' || true
for k in 1 2; do ask "after$k"; done
echo "end: $(date -u +%FT%TZ), $(uptime)"
echo "target's events: $(grep -o '"event":"[a-z_]*"' "$OUT/target.json" | sort | uniq -c | tr -s ' \n' ' ')"
echo "the witness at the target: $(grep -c '"name":"witness"' "$OUT/target.json") events," \
    "$(grep '"name":"witness"' "$OUT/target.json" | grep -c '"event":"joined"') joined," \
    "$(grep '"name":"witness"' "$OUT/target.json" | grep -vc '"event":"joined"') other (left, restarted, duplicate)"
grep "refused" "$OUT/target.err" | tail -3 | cut -c 1-400 || true
