# Checks of the systemd guest (cargo xtask vm-test): oomwatch installed from
# its Debian package and run by systemd as PID 1, on Debian's 6.1 kernel.
# Run by oomwatch-vm-test.service once the system is up (bash).
#
# Like tests/vm/driver.sh, this only observes and reports; every assertion
# is on the host (xtask/src/vm/systemd_report.rs). One line per fact on the
# console:
#   OOMWATCH-VM-RESULT {"scenario":CHECK,"key":K,"value":V}
# "vm-driver: ..." lines are progress for people.
#
# Adding a check: write check_NAME below, add NAME to CHECKS (order
# matters: each check starts from the state the previous one left), and add
# its expectations to systemd_report.rs. Every check gets "started" and
# "finished" (uptime seconds) around it, so the host reports its time.

CHECKS="boot install active probes oom_kill reload reload_broken restart upgrade security stop remove purge"
VM=/root/vm
LISTEN=127.0.0.1:8967
CONF=/etc/oomwatch/oomwatch.toml
UNIT=oomwatch.service
# A dash in a slice name is a level: this one lives in oomwatch.slice.
SLICE=oomwatch-test.slice
SLICE_CGROUP=/oomwatch.slice/oomwatch-test.slice
MARK=OOMWATCH-VM-RESULT
export DEBIAN_FRONTEND=noninteractive SYSTEMD_COLORS=0 SYSTEMD_PAGER= PAGER=cat

say() { echo "vm-driver: $*"; }

emit_json() { echo "$MARK {\"scenario\":\"$1\",\"key\":\"$2\",\"value\":$3}"; }

# Text as a JSON string: control characters dropped, \ and " escaped.
emit_str() {
    emit_json "$1" "$2" "\"$(printf '%s' "$3" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')\""
}

# One result per line of a file (or of stdin with -); JSON objects stay JSON.
emit_lines() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            "{"*"}") emit_json "$1" "$2" "$line" ;;
            *) emit_str "$1" "$2" "$line" ;;
        esac
    done < "${3:-/dev/stdin}"
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
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }'; }
# Time limits are measured on the guest's clock, not counted in polls: under
# TCG on a busy host one poll can take a second.
before() { awk -v t0="$1" -v lim="$2" -v now="$(uptime_s)" 'BEGIN { exit !(now - t0 < lim) }'; }

http_get() { timeout 15 busybox wget -q -O - "http://$LISTEN$1" 2>/dev/null; }

main_pid() { systemctl show -p MainPID --value "$UNIT"; }

# Waits up to $1 s for the unit to be active with /healthz answering; prints
# the seconds it took, returns 1 on time-out.
wait_ready() {
    local t0
    t0=$(uptime_s)
    while before "$t0" "$1"; do
        if [ "$(systemctl is-active "$UNIT")" = active ] && http_get /healthz | grep -q '^ok'; then
            since "$t0"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Polls `journalctl -u oomwatch` (this boot, after cursor file $2) for a
# line with fixed string $1, at most $3 seconds.
wait_journal() {
    local t0
    t0=$(uptime_s)
    while before "$t0" "$3"; do
        journalctl -u "$UNIT" -o cat --no-pager --after-cursor="$(cat "$2")" 2>/dev/null | grep -qF -- "$1" && return 0
        sleep 0.1
    done
    return 1
}

# A cursor for wait_journal: "from now on".
mark_journal() { journalctl -n 0 --show-cursor -o cat --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p' > "$1"; }

# Polls file $1 for a line with fixed strings $2 and $3, at most $4 s.
wait_for_line() {
    local t0
    t0=$(uptime_s)
    while before "$t0" "$4"; do
        grep -F -- "$2" "$1" 2>/dev/null | grep -qF -- "$3" && return 0
        sleep 0.1
    done
    return 1
}

emit_unit_state() {
    emit_str "$1" is_active "$(systemctl is-active "$UNIT")"
    emit_str "$1" main_pid "$(main_pid)"
    emit_str "$1" n_restarts "$(systemctl show -p NRestarts --value "$UNIT")"
}

# --- the checks -------------------------------------------------------------

check_boot() {
    emit_str boot kernel "$(uname -r)"
    emit_str boot driver_started_s "$(uptime_s)"
    # Monotonic microseconds at which the kernel started systemd.
    emit_str boot userspace_started_us "$(systemctl show -p UserspaceTimestampMonotonic --value)"
    # Where the boot went: systemd-analyze blame needs a finished boot, and
    # the boot finishes only when this unit has.
    for t in sysinit.target basic.target multi-user.target; do
        emit_str boot "${t%.target}_reached_us" "$(systemctl show -p ActiveEnterTimestampMonotonic --value "$t")"
    done
    emit_str boot system_state "$(systemctl is-system-running)"
    systemctl list-units --failed --plain --no-legend | emit_lines boot failed_unit
    emit_str boot perf_event_paranoid "$(cat /proc/sys/kernel/perf_event_paranoid)"
    emit_str boot cgroup_controllers "$(cat /sys/fs/cgroup/cgroup.controllers)"
    emit_str boot tracefs "$(grep -m1 ' tracefs ' /proc/self/mountinfo)"
}

check_install() {
    local deb
    deb=$(ls "$VM"/oomwatch_*.deb)
    emit_str install deb "${deb##*/}"
    # No network in the VM: the package must install from what is there.
    apt-get install -y "$deb" > /tmp/apt.out 2>&1
    emit_json install apt_status "$?"
    tail -n 25 /tmp/apt.out | emit_lines install apt_output
    emit_str install dpkg_status "$(dpkg-query -W -f='${Status} ${Version}' oomwatch)"
    emit_str install conffiles "$(dpkg-query -W -f='${Conffiles}' oomwatch | tr -s ' \n' ' ')"
    dpkg -L oomwatch | emit_lines install file
    if oomwatch check --print-defaults | cmp -s - "$CONF"; then
        emit_json install conffile_is_defaults true
    else
        emit_json install conffile_is_defaults false
    fi
    emit_str install is_enabled "$(systemctl is-enabled "$UNIT")"
    emit_str install binary "$(command -v oomwatch)"
}

check_active() {
    local ready pid
    # postinst started it; it is up once /healthz answers.
    if ready=$(wait_ready 60); then emit_str active ready_after_s "$ready"; fi
    emit_unit_state active
    pid=$(main_pid)
    emit_str active oom_score_adj "$(cat "/proc/$pid/oom_score_adj")"
    grep '^Cap' "/proc/$pid/status" | emit_lines active caps
    emit_str active state_dir "$(stat -c '%F %a %U' /var/lib/oomwatch 2>&1)"
    emit_str active socket "$(stat -c '%F %a' /run/oomwatch/events.sock 2>&1)"
    journalctl -u "$UNIT" -o cat --no-pager | emit_lines active journal
}

# Probes, and PSI triggers written into the cgroups' memory.pressure files
# from inside the sandbox (the daemon places them as it finds the cgroups:
# wait for more than the host's own).
check_probes() {
    local t0 active
    t0=$(uptime_s)
    while before "$t0" 20; do
        active=$(http_get /metrics | sed -n 's/^oomwatch_psi_triggers_active \([0-9]*\).*/\1/p')
        [ "${active:-0}" -gt 1 ] && break
        sleep 0.5
    done
    http_get /metrics | grep -E '^oomwatch_(probe_attached|psi_triggers)' | emit_lines probes metric
    journalctl -u "$UNIT" -o cat --no-pager | grep -F 'PSI trigger' | emit_lines probes psi_warning
}

# A real OOM kill in a scope with MemoryMax under the test slice, as an
# unprivileged user (the daemon reads another user's /proc/PID).
# Reports as check $1; sets HOG_CGROUP.
oom_kill_in_scope() {
    local c=$1 scope=$2 tail_pid hog status
    HOG_CGROUP=$SLICE_CGROUP/$scope.scope
    emit_str "$c" cgroup "$HOG_CGROUP"
    oomwatch tail --json --since 10m > "/tmp/$c.tail" 2> "/tmp/$c.tail.err" &
    tail_pid=$!
    sleep 1
    say "$c: memhog hog 256 in $HOG_CGROUP (MemoryMax=64M, user nobody)"
    systemd-run --quiet --scope --slice="$SLICE" --unit="$scope" -p MemoryMax=64M -p MemorySwapMax=0 --uid=nobody \
        /usr/local/bin/memhog hog 256 > "/tmp/$c.hog" 2>&1 &
    hog=$!
    emit_json "$c" hog_pid "$hog"
    # The kernel kills it within a second or two; 60 s is for a slow host.
    ( sleep 60; kill -9 "$hog" 2>/dev/null ) &
    local watchdog=$!
    wait "$hog"
    status=$?
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    emit_json "$c" hog_status "$status"
    if wait_for_line "/tmp/$c.tail" '"kind":"victim_exit"' "\"pid\":$hog," 20; then
        emit_json "$c" victim_exit_seen true
    else
        emit_json "$c" victim_exit_seen false
    fi
    sleep 1
    kill "$tail_pid" 2>/dev/null
    wait "$tail_pid" 2>/dev/null
    emit_lines "$c" event "/tmp/$c.tail"
    emit_lines "$c" tail_stderr "/tmp/$c.tail.err"
    http_get /metrics | grep '^oomwatch_oom_kills_total' | emit_lines "$c" metric
    emit_events_file "$c" slice_memory_events "/sys/fs/cgroup$SLICE_CGROUP/memory.events"
}

emit_alerts() {
    oomwatch alerts --json --history 0 > /tmp/alerts.json 2>&1
    # Pretty JSON never has raw newlines inside strings: joining is safe.
    emit_json "$1" alerts "$(tr -d '\n' < /tmp/alerts.json)"
}

check_oom_kill() {
    oom_kill_in_scope oom_kill oomwatch-test-hog1
    # The alert line the daemon logged for it.
    sleep 1
    journalctl -u "$UNIT" -o cat --no-pager | grep -F "$HOG_CGROUP" | emit_lines oom_kill journal
    emit_alerts oom_kill
    # The journald shipping sink (on by default where journald runs): the
    # kill as a structured entry, found by its MESSAGE_ID and cgroup.
    local entry="" i
    for i in $(seq 1 20); do
        entry=$(journalctl -o json --no-pager MESSAGE_ID=5e47ed6aa7fc49d3af8ee46489ec5517 "OOMWATCH_CGROUP=$HOG_CGROUP" 2>/dev/null | tail -n 1)
        [ -n "$entry" ] && break
        sleep 0.5
    done
    emit_json oom_kill journal_entry "${entry:-null}"
}

# An observable change: the oom_kill alert switched off. After the reload a
# second kill is still traced, but raises no alert.
check_reload() {
    local pid
    cp "$CONF" /tmp/oomwatch.toml.orig
    sed -i '/^\[alerts.oom_kill\]/,/^\[/ s/^enabled = true/enabled = false/' "$CONF"
    emit_str reload changed "$(grep -A1 '^\[alerts.oom_kill\]' "$CONF" | tr '\n' ' ')"
    emit_str reload check_config "$(oomwatch check --config "$CONF" 2>&1)"
    pid=$(main_pid)
    mark_journal /tmp/reload.cursor
    systemctl reload "$UNIT" > /tmp/reload.out 2>&1
    emit_json reload reload_status "$?"
    if wait_journal "SIGHUP: reloaded" /tmp/reload.cursor 20; then
        emit_json reload logged true
    else
        emit_json reload logged false
    fi
    journalctl -u "$UNIT" -o cat --no-pager --after-cursor="$(cat /tmp/reload.cursor)" | emit_lines reload journal
    emit_str reload same_pid "$([ "$(main_pid)" = "$pid" ] && echo yes || echo no)"
    oom_kill_in_scope reload oomwatch-test-hog2
    sleep 1
    emit_alerts reload
}

# A file that does not validate: `systemctl reload` fails (ExecReload checks
# it first) and the daemon, sent SIGHUP anyway, keeps running on the old one.
check_reload_broken() {
    local pid
    cp "$CONF" /tmp/oomwatch.toml.good
    sed -i '/^\[alerts.oom_forecast\]/,/^\[/ s/^critical_eta = .*/critical_eta = "2m"/' "$CONF"
    emit_str reload_broken check_config "$(oomwatch check --config "$CONF" 2>&1)"
    pid=$(main_pid)
    mark_journal /tmp/broken.cursor
    systemctl reload "$UNIT" > /tmp/broken.out 2>&1
    emit_json reload_broken reload_status "$?"
    emit_lines reload_broken reload_output /tmp/broken.out
    # Past the ExecReload check: the daemon's own refusal.
    kill -HUP "$pid"
    if wait_journal "keeping the running configuration" /tmp/broken.cursor 20; then
        emit_json reload_broken daemon_refused true
    else
        emit_json reload_broken daemon_refused false
    fi
    journalctl -u "$UNIT" -o cat --no-pager --after-cursor="$(cat /tmp/broken.cursor)" | emit_lines reload_broken journal
    sleep 1
    emit_unit_state reload_broken
    emit_str reload_broken same_pid "$([ "$(main_pid)" = "$pid" ] && echo yes || echo no)"
    if http_get /healthz | grep -q '^ok'; then emit_json reload_broken healthz true; else emit_json reload_broken healthz false; fi
    cp /tmp/oomwatch.toml.orig "$CONF"
}

check_restart() {
    local pid t0 ready
    pid=$(main_pid)
    t0=$(uptime_s)
    systemctl restart "$UNIT"
    emit_json restart status "$?"
    emit_str restart restart_s "$(since "$t0")"
    if ready=$(wait_ready 60); then emit_str restart ready_after_s "$ready"; fi
    emit_unit_state restart
    emit_str restart new_pid "$([ "$(main_pid)" != "$pid" ] && echo yes || echo no)"
}

# Installing the package over itself runs what an upgrade runs (prerm
# upgrade, postinst configure OLD-VERSION): a restart, the enablement and an
# edited conffile kept.
check_upgrade() {
    local pid ready
    echo "# edited by the VM test" >> "$CONF"
    pid=$(main_pid)
    dpkg -i --force-confold "$(ls "$VM"/oomwatch_*.deb)" > /tmp/upgrade.out 2>&1
    emit_json upgrade dpkg_status "$?"
    tail -n 10 /tmp/upgrade.out | emit_lines upgrade dpkg_output
    if ready=$(wait_ready 60); then emit_str upgrade ready_after_s "$ready"; fi
    emit_unit_state upgrade
    emit_str upgrade new_pid "$([ "$(main_pid)" != "$pid" ] && echo yes || echo no)"
    emit_str upgrade is_enabled "$(systemctl is-enabled "$UNIT")"
    if grep -q '^# edited by the VM test' "$CONF"; then emit_json upgrade conffile_kept true; else emit_json upgrade conffile_kept false; fi
}

check_security() {
    systemd-analyze security --no-pager "$UNIT" > /tmp/security.out 2>&1
    emit_json security status "$?"
    emit_lines security line /tmp/security.out
}

check_stop() {
    local t0 ready
    t0=$(uptime_s)
    systemctl stop "$UNIT"
    emit_json stop status "$?"
    emit_str stop stop_s "$(since "$t0")"
    emit_str stop is_active "$(systemctl is-active "$UNIT")"
    emit_str stop result "$(systemctl show -p Result --value "$UNIT") $(systemctl show -p ExecMainStatus --value "$UNIT")"
    # Running again, for the removal to stop.
    systemctl start "$UNIT"
    if ready=$(wait_ready 60); then emit_str stop started_again_after_s "$ready"; fi
}

check_remove() {
    echo kept > /var/lib/oomwatch/vm-test-marker
    apt-get remove -y oomwatch > /tmp/remove.out 2>&1
    emit_json remove apt_status "$?"
    tail -n 10 /tmp/remove.out | emit_lines remove apt_output
    emit_str remove is_active "$(systemctl is-active "$UNIT")"
    emit_str remove load_state "$(systemctl show -p LoadState --value "$UNIT")"
    emit_str remove dpkg_status "$(dpkg-query -W -f='${Status}' oomwatch 2>&1)"
    emit_str remove binary "$(ls /usr/sbin/oomwatch 2>&1)"
    emit_str remove state_dir "$(ls -A /var/lib/oomwatch 2>&1 | tr '\n' ' ')"
    emit_str remove conffile "$(ls "$CONF" 2>&1)"
}

check_purge() {
    apt-get purge -y oomwatch > /tmp/purge.out 2>&1
    emit_json purge apt_status "$?"
    tail -n 10 /tmp/purge.out | emit_lines purge apt_output
    emit_str purge dpkg_status "$(dpkg-query -W -f='${Status}' oomwatch 2>&1)"
    emit_str purge state_dir "$(ls -d /var/lib/oomwatch 2>&1)"
    emit_str purge etc_dir "$(ls -d /etc/oomwatch 2>&1)"
    emit_str purge enablement "$(ls /etc/systemd/system/multi-user.target.wants/oomwatch.service /var/lib/systemd/deb-systemd-helper-enabled/oomwatch.service.dsh-also 2>&1 | tr '\n' ' ')"
}

# Only with `cargo xtask vm-test --hardening-matrix`: each line of
# $VM/hardening ("name<TAB>directive;directive") as a drop-in on its own:
# does the daemon start, attach, see a kill; what does it log; the score.
check_hardening() {
    local n=0 name directives c ready
    mkdir -p /etc/systemd/system/oomwatch.service.d
    while IFS=$'\t' read -r -u 3 name directives setup; do
        n=$((n + 1))
        c=hardening_$n
        say "hardening $n: $name"
        emit_str "$c" name "$name"
        # A host setting the candidate needs (a sysctl), undone at the end.
        [ -n "$setup" ] && sh -c "$setup" < /dev/null
        printf '[Service]\n%s\n' "$(printf '%s' "$directives" | tr ';' '\n')" > /etc/systemd/system/oomwatch.service.d/zz-try.conf
        systemctl daemon-reload
        mark_journal /tmp/h.cursor
        systemctl restart "$UNIT" < /dev/null
        emit_json "$c" restart_status "$?"
        if ready=$(wait_ready 30); then emit_str "$c" ready_after_s "$ready"; fi
        emit_str "$c" is_active "$(systemctl is-active "$UNIT")"
        http_get /metrics | grep -E '^oomwatch_(probe_attached|psi_triggers)' | emit_lines "$c" metric
        oom_kill_in_scope "$c" "oomwatch-test-h$n" < /dev/null
        journalctl -u "$UNIT" -o cat --no-pager --after-cursor="$(cat /tmp/h.cursor)" | grep -Ei ' (WARN|ERROR) |error|denied|not permitted|permission|EPERM|EACCES|fail|cannot' | emit_lines "$c" journal
        sysctl -q kernel.perf_event_paranoid=3
    done 3< "$VM/hardening"
    rm -f /etc/systemd/system/oomwatch.service.d/zz-try.conf
    systemctl daemon-reload
}

main() {
    # Kernel messages (the OOM report) would land in the middle of result
    # lines on the shared console.
    dmesg -n 1
    install -m 0755 "$VM/memhog" /usr/local/bin/memhog
    say "systemd guest up at $(uptime_s) s; checks: ${OOMWATCH_CHECKS:-$CHECKS}"
    for c in ${OOMWATCH_CHECKS:-$CHECKS}; do
        say "check $c"
        emit_str "$c" started "$(uptime_s)"
        "check_$c"
        emit_str "$c" finished "$(uptime_s)"
    done
    emit_json vm end true
}

[ -r "$VM/env" ] && . "$VM/env"
main
sync
systemctl poweroff --force --force
