# Scenario driver for the oomwatch test VM, sourced by /init (busybox sh).
#
# The same real scenarios as the host integration tests (tests/tests/), run
# on the guest kernel. The driver only observes and reports; every assertion
# lives on the host (xtask/src/vm/report.rs), so a failed expectation never
# hides the rest of what the VM saw.
#
# Output protocol, one line per fact on the console:
#   OOMWATCH-VM-RESULT {"scenario":S,"key":K,"value":V}
# V is JSON: objects for JSON the tools printed, strings for text, numbers.
# Lines starting with "vm-driver:" are progress for people.
#
# Adding a scenario: write scenario_NAME (see the two below), add NAME to
# SCENARIOS, and add its expectations to xtask/src/vm/report.rs.
# OOMWATCH_SCENARIOS=a,b on the kernel command line (which the kernel hands
# to init as environment) narrows the list: `cargo xtask vm-test --scenario`.

SCENARIOS="oom_kill nested_limit pressure group_kill throttle_kill"
LISTEN=127.0.0.1:8967
SOCK=/run/oomwatch/events.sock
CGROOT=/sys/fs/cgroup
MARK=OOMWATCH-VM-RESULT

say() { echo "vm-driver: $*"; }

emit_json() { echo "$MARK {\"scenario\":\"$1\",\"key\":\"$2\",\"value\":$3}"; }

# Text as a JSON string: control characters dropped, \ and " escaped.
emit_str() {
    emit_json "$1" "$2" "\"$(printf '%s' "$3" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')\""
}

# One result per line of a file; lines that are JSON objects stay JSON.
emit_lines() {
    [ -f "$3" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            "{"*"}") emit_json "$1" "$2" "$line" ;;
            *) emit_str "$1" "$2" "$line" ;;
        esac
    done < "$3"
}

# memory.events ("oom_kill 1" lines) as a JSON object.
emit_events_file() {
    if [ -r "$3" ]; then
        emit_json "$1" "$2" "{$(sed 's/^\([a-z_]*\) \([0-9]*\)$/"\1":\2/' "$3" | tr '\n' ',' | sed 's/,$//')}"
    else
        emit_str "$1" "$2" "missing: $3"
    fi
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# kill -0 succeeds on zombies, and an unreaped child is one.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# Waits for child $1 for at most $2 seconds (then SIGKILLs it); sets STATUS
# to its wait status and TIMED_OUT to 1 when the watchdog had to act.
wait_child() {
    rm -f "/tmp/watchdog.$1"
    ( sleep "$2"; alive "$1" && touch "/tmp/watchdog.$1" && kill -9 "$1" ) &
    watchdog=$!
    wait "$1"
    STATUS=$?
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    TIMED_OUT=0
    [ -e "/tmp/watchdog.$1" ] && TIMED_OUT=1
}

# Polls file $1 for a line with all of $2 and $3 (fixed strings), $4 seconds.
wait_for_line() {
    n=0
    while [ "$n" -lt $(($4 * 10)) ]; do
        grep -F -- "$2" "$1" 2>/dev/null | grep -q -- "$3" && return 0
        sleep 0.1
        n=$((n + 1))
    done
    return 1
}

# busybox 1.35's wget segfaults when given -T, hence timeout(1). Not nc:
# the daemon's HTTP server drops a connection whose client half-closes
# (nc does on stdin EOF) before it has answered.
http_get() { timeout 15 wget -q -O - "http://$LISTEN$1" 2>/dev/null; }

start_daemon() {
    say "starting oomwatch daemon"
    t0=$(uptime_s)
    # Debug: one line per kill says what the kill path read (report.rs checks it).
    oomwatch daemon --listen "$LISTEN" --socket "$SOCK" --log-level debug > /tmp/daemon.log 2>&1 &
    DAEMON=$!
    emit_json daemon pid "$DAEMON"
    # Ready in about 1 s under TCG here; 90 s covers a far slower host.
    n=0
    while [ "$n" -lt 900 ]; do
        if ! alive "$DAEMON"; then
            wait "$DAEMON"
            emit_json daemon exited_during_start "$?"
            emit_lines daemon log /tmp/daemon.log
            return 1
        fi
        if [ -S "$SOCK" ] && http_get /healthz | grep -q '^ok'; then
            emit_str daemon ready_after_s "$(echo "$t0 $(uptime_s)" | awk '{printf "%.1f", $2 - $1}')"
            return 0
        fi
        sleep 0.1
        n=$((n + 1))
    done
    emit_str daemon not_ready "no /healthz after 90 s"
    emit_lines daemon log /tmp/daemon.log
    return 1
}

stop_daemon() {
    kill -TERM "$DAEMON" 2>/dev/null
    wait_child "$DAEMON" 15
    emit_json daemon exit_status "$STATUS"
    emit_lines daemon log /tmp/daemon.log
}

# What every kill scenario shares: follow the stream, run `memhog hog $3`
# inside cgroup dir $2, wait for the kill and for the daemon to confirm the
# victim's exit, then report the stream, the kernel's counters, /metrics.
kill_and_collect() {
    s=$1 hog_dir=$2 hog_mb=$3
    tail_out=/tmp/$s.tail
    # --since replays what the daemon already published, so a slow client
    # connect cannot lose the kill; the host picks events by pid.
    oomwatch tail --json --since 10m --socket "$SOCK" > "$tail_out" 2> "$tail_out.err" &
    tail_pid=$!
    sleep 1

    say "$s: memhog hog $hog_mb in ${hog_dir#$CGROOT}"
    sh -c 'echo $$ > "$1/cgroup.procs" && exec memhog hog "$2"' memhog "$hog_dir" "$hog_mb" &
    hog=$!
    emit_json "$s" hog_pid "$hog"
    wait_child "$hog" 60
    emit_json "$s" hog_status "$STATUS"
    emit_json "$s" hog_watchdog "$TIMED_OUT"

    if wait_for_line "$tail_out" '"kind":"victim_exit"' "\"pid\":$hog," 20; then
        emit_json "$s" victim_exit_seen true
    else
        emit_json "$s" victim_exit_seen false
    fi
    # The daemon counts a kill when it publishes it, so /metrics should
    # already agree; the second is slack for a slow emulation host.
    sleep 1

    kill "$tail_pid" 2>/dev/null
    wait "$tail_pid" 2>/dev/null
    emit_lines "$s" event "$tail_out"
    emit_lines "$s" tail_stderr "$tail_out.err"
    http_get /metrics | grep '^oomwatch_' > "/tmp/$s.metrics"
    emit_lines "$s" metric "/tmp/$s.metrics"
}

# A contained kill: the limit is on the hog's own cgroup.
scenario_oom_kill() {
    s=oom_kill
    cg=$CGROOT/oomwatch-test-vm1
    mkdir "$cg" && echo 64M > "$cg/memory.max" || { emit_str "$s" setup_failed "$cg"; return; }
    emit_str "$s" victim_cgroup "${cg#$CGROOT}"
    emit_str "$s" limit_cgroup "${cg#$CGROOT}"
    kill_and_collect "$s" "$cg" 256
    emit_events_file "$s" memory_events "$cg/memory.events"
}

# The limit is on a parent; the hog runs in a child without a limit of its
# own. The victim's cgroup is the child; the one that ran out is the parent.
scenario_nested_limit() {
    s=nested_limit
    parent=$CGROOT/oomwatch-test-vm2
    child=$parent/hog
    { mkdir "$parent" && echo 64M > "$parent/memory.max" &&
        echo +memory > "$parent/cgroup.subtree_control" && mkdir "$child"; } ||
        { emit_str "$s" setup_failed "$parent"; return; }
    emit_str "$s" victim_cgroup "${child#$CGROOT}"
    emit_str "$s" limit_cgroup "${parent#$CGROOT}"
    kill_and_collect "$s" "$child" 256
    emit_events_file "$s" memory_events "$child/memory.events"
    emit_events_file "$s" limit_memory_events "$parent/memory.events"
    emit_events_file "$s" limit_memory_events_local "$parent/memory.events.local"
}

# Pressure without a disk: memory.high below what the workload holds makes
# the kernel reclaim and throttle it (penalty sleeps count as memory stalls),
# so PSI rises, the daemon's trigger fires, and memcg reclaim stalls are
# traced. memory.max stays far above: nothing is killed.
scenario_pressure() {
    s=pressure
    cg=$CGROOT/oomwatch-test-vm3
    { mkdir "$cg" && echo 200M > "$cg/memory.max" && echo 24M > "$cg/memory.high"; } ||
        { emit_str "$s" setup_failed "$cg"; return; }
    emit_str "$s" cgroup "${cg#$CGROOT}"
    tail_out=/tmp/$s.tail
    oomwatch tail --json --since 10m --socket "$SOCK" > "$tail_out" 2> "$tail_out.err" &
    tail_pid=$!
    # Let the daemon find the cgroup and place a PSI trigger on it.
    sleep 4
    say "$s: memhog hold 64 10 under memory.high=24M"
    sh -c 'echo $$ > "$1/cgroup.procs" && exec memhog hold 64 10' memhog "$cg" &
    hog=$!
    emit_json "$s" hog_pid "$hog"
    if wait_for_line "$tail_out" '"kind":"pressure"' "\"cgroup\":\"${cg#$CGROOT}\"" 40; then
        emit_json "$s" pressure_event_seen true
    else
        emit_json "$s" pressure_event_seen false
    fi
    wait_child "$hog" 60
    emit_json "$s" hog_status "$STATUS"
    kill "$tail_pid" 2>/dev/null
    wait "$tail_pid" 2>/dev/null
    emit_lines "$s" event "$tail_out"
    emit_events_file "$s" memory_events "$cg/memory.events"
    emit_str "$s" memory_pressure "$(head -1 "$cg/memory.pressure")"
    http_get /metrics | grep '^oomwatch_' > "/tmp/$s.metrics"
    emit_lines "$s" metric "/tmp/$s.metrics"
}

# Follows the stream into /tmp/$1.tail (replaying what was published).
start_tail() {
    tail_out=/tmp/$1.tail
    oomwatch tail --json --since 10m --socket "$SOCK" > "$tail_out" 2> "$tail_out.err" &
    tail_pid=$!
}

# Stops the stream of scenario $1 and reports it, the kernel's memory.events
# of cgroup dir $2 and /metrics.
collect() {
    kill "$tail_pid" 2>/dev/null
    wait "$tail_pid" 2>/dev/null
    emit_lines "$1" event "$tail_out"
    emit_lines "$1" tail_stderr "$tail_out.err"
    emit_events_file "$1" memory_events "$2/memory.events"
    http_get /metrics | grep '^oomwatch_' > "/tmp/$1.metrics"
    emit_lines "$1" metric "/tmp/$1.metrics"
}

# A group kill: memory.oom.group on the parent, whose memory.max is hit;
# one process in each of three children (two hold a little, the third
# grows). The kernel kills all three in one invocation: one incident.
# The victims are in three cgroups, so one alert (not three) shows the
# alert is per incident, not per cgroup.
scenario_group_kill() {
    s=group_kill
    cg=$CGROOT/oomwatch-test-vm4
    { mkdir "$cg" && echo 64M > "$cg/memory.max" && echo 1 > "$cg/memory.oom.group" &&
        echo +memory > "$cg/cgroup.subtree_control" && mkdir "$cg/a" "$cg/b" "$cg/c"; } ||
        { emit_str "$s" setup_failed "$cg"; return; }
    emit_str "$s" cgroup "${cg#$CGROOT}"
    emit_str "$s" oom_group "$(cat "$cg/memory.oom.group")"
    http_get /metrics | grep '^oomwatch_oom_incidents_total' > "/tmp/$s.before"
    emit_lines "$s" metric_before "/tmp/$s.before"
    start_tail "$s"
    sleep 2
    pids=""
    for child in a b; do
        sh -c 'echo $$ > "$1/cgroup.procs" && exec memhog hold 8 600' memhog "$cg/$child" &
        pids="$pids $!"
    done
    # The holders have their memory before the hog grows past the limit.
    sleep 2
    say "$s: memhog hog 256 in ${cg#$CGROOT}/c, two holders in a and b, memory.oom.group=1"
    sh -c 'echo $$ > "$1/cgroup.procs" && exec memhog hog 256' memhog "$cg/c" &
    pids="$pids $!"
    for p in $pids; do
        emit_json "$s" member_pid "$p"
    done
    for p in $pids; do
        wait_child "$p" 60
        emit_json "$s" member_status "$STATUS"
    done
    # The incident is published once no kill joined it for a second; the
    # reconciler (every 5 s, two passes) would report a miscounted kill.
    if wait_for_line "$tail_out" '"kind":"incident"' "\"cgroup\":\"${cg#$CGROOT}\"" 20; then
        emit_json "$s" incident_seen true
    else
        emit_json "$s" incident_seen false
    fi
    sleep 11
    collect "$s" "$cg"
}

# Throttled at memory.high, then killed at memory.max: memory.high 40M,
# memory.max 46M, a hog that grows past both. Above memory.high the kernel
# makes it sleep on every 256 KiB it charges (longer the further above),
# so it takes seconds to reach memory.max.
scenario_throttle_kill() {
    s=throttle_kill
    cg=$CGROOT/oomwatch-test-vm5
    { mkdir "$cg" && echo 46M > "$cg/memory.max" && echo 40M > "$cg/memory.high"; } ||
        { emit_str "$s" setup_failed "$cg"; return; }
    emit_str "$s" cgroup "${cg#$CGROOT}"
    start_tail "$s"
    sleep 2
    say "$s: memhog hog 256 under memory.high=40M, memory.max=46M"
    t0=$(uptime_s)
    sh -c 'echo $$ > "$1/cgroup.procs" && exec memhog hog 256' memhog "$cg" &
    hog=$!
    emit_json "$s" hog_pid "$hog"
    wait_child "$hog" 120
    emit_json "$s" hog_status "$STATUS"
    emit_json "$s" hog_watchdog "$TIMED_OUT"
    emit_str "$s" hog_ran_s "$(echo "$t0 $(uptime_s)" | awk '{printf "%.1f", $2 - $1}')"
    # The episode ends once the counter stood still for 5 s.
    # (Only throttled events say "ended"; the replay holds earlier scenarios'.)
    if wait_for_line "$tail_out" '"state":"ended"' "\"cgroup\":\"${cg#$CGROOT}\"" 30; then
        emit_json "$s" throttle_end_seen true
    else
        emit_json "$s" throttle_end_seen false
    fi
    collect "$s" "$cg"
}

main() {
    # Only what the kernel says from here on is replayed at the end: the
    # boot log would push the results out of the host's failure excerpt.
    dmesg_seen=$(dmesg | wc -l)
    say "kernel $(uname -r)"
    emit_str vm kernel "$(uname -r)"
    emit_str vm cmdline "$(cat /proc/cmdline)"
    emit_str vm cgroup_controllers "$(cat $CGROOT/cgroup.controllers)"
    emit_lines vm mountinfo /proc/self/mountinfo
    # The ground truth for which victim fields the kernel gives.
    emit_lines vm mark_victim_format /sys/kernel/tracing/events/oom/mark_victim/format

    oomwatch check --json > /tmp/check.json 2> /tmp/check.err
    emit_json vm check_status "$?"
    if grep -q '^{' /tmp/check.json; then
        # Pretty JSON never has raw newlines inside strings: joining is safe.
        emit_json vm check "$(tr -d '\n' < /tmp/check.json)"
    else
        emit_lines vm check_output /tmp/check.json
    fi
    emit_lines vm check_stderr /tmp/check.err

    if start_daemon; then
        # Comma-separated: a kernel command line word cannot hold a space.
        for s in $(echo "${OOMWATCH_SCENARIOS:-$SCENARIOS}" | tr ',' ' '); do
            say "scenario $s"
            emit_str "$s" started "$(uptime_s)"
            "scenario_$s"
            emit_str "$s" finished "$(uptime_s)"
        done
        stop_daemon
    fi

    echo "---- guest dmesg since the driver started ----"
    dmesg | tail -n +$((dmesg_seen + 1))
    echo "---- end of guest dmesg ----"
    emit_json vm end true
}
