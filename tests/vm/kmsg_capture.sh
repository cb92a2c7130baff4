# Captures the kernel's OOM reports on the guest kernel (Debian 6.1, pure
# cgroup v2) for the kmsg parser's fixtures: `cargo xtask vm-kmsg-capture`
# boots the VM with OOMWATCH_KMSG_CAPTURE=1 and /init sources this instead
# of driver.sh. Each scenario causes real kills in oomwatch-test-* cgroups
# while `kmsg_capture follow` records /dev/kmsg from its end; the records
# are printed on the console, one line each, as
#   OOMWATCH-KMSG <scenario> <record line>
# and the host writes them back into files.

CGROOT=/sys/fs/cgroup

say() { echo "vm-driver: $*"; }

alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# Starts the follower for scenario $1; capture_stop prints what it read.
capture_start() {
    CAP=/tmp/kmsg.$1
    rm -f "$CAP" "$CAP.ready" "$CAP.stop"
    kmsg_capture follow "$CAP" "$CAP.stop" &
    CAP_PID=$!
    while [ ! -e "$CAP.ready" ]; do sleep 0.05; done
}

capture_stop() {
    # The reaper's lines come a little after the kill.
    sleep 1
    touch "$CAP.stop"
    wait "$CAP_PID"
    while IFS= read -r line || [ -n "$line" ]; do
        echo "OOMWATCH-KMSG $1 $line"
    done < "$CAP"
}

# Runs "$@" inside cgroup $1 (it joins before exec) in the background.
run_in() {
    dir=$1
    shift
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$dir" "$@" &
}

wait_gone() {
    n=0
    while alive "$1" && [ "$n" -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
}

new_cg() {
    mkdir "$CGROOT/$1" && echo "$2" > "$CGROOT/$1/memory.max"
}

drop_cg() {
    for p in $(cat "$CGROOT/$1/cgroup.procs" 2>/dev/null); do kill -9 "$p"; done
    sleep 0.2
    rmdir "$CGROOT/$1" 2>/dev/null
}

scenario_plain() {
    new_cg oomwatch-test-plain 64M
    run_in $CGROOT/oomwatch-test-plain memhog hog 256
    wait_gone $!
    say "plain: victim $!"
    drop_cg oomwatch-test-plain
}

# The big hog is the victim; the small leaking one triggers the OOM.
scenario_not_trigger() {
    new_cg oomwatch-test-two 64M
    run_in $CGROOT/oomwatch-test-two memhog hog 40
    big=$!
    while [ "$(cat $CGROOT/oomwatch-test-two/memory.current)" -lt 41943040 ]; do sleep 0.1; done
    run_in $CGROOT/oomwatch-test-two memhog leak 1 20 30
    small=$!
    wait_gone "$big"
    say "not_trigger: victim $big, trigger $small"
    drop_cg oomwatch-test-two
}

scenario_shmem() {
    new_cg oomwatch-test-shm 64M
    mkdir -p /tmp/shm
    mount -t tmpfs -o size=512m oomwatch-test-tmpfs /tmp/shm
    run_in $CGROOT/oomwatch-test-shm memhog shm /tmp/shm/segment 256
    wait_gone $!
    say "shmem: victim $!"
    drop_cg oomwatch-test-shm
    umount /tmp/shm
}

# memory.oom.group on a parent: the hog in one child triggers the OOM and
# every task of the parent (both children) is killed with it.
scenario_group() {
    p=$CGROOT/oomwatch-test-group
    mkdir "$p" && echo 64M > "$p/memory.max" && echo 1 > "$p/memory.oom.group" &&
        echo +memory > "$p/cgroup.subtree_control" && mkdir "$p/a" "$p/b"
    run_in "$p/a" memhog hog 8
    a1=$!
    run_in "$p/a" memhog hog 8
    a2=$!
    sleep 1
    run_in "$p/b" memhog hog 256
    b=$!
    wait_gone "$b"
    wait_gone "$a1"
    wait_gone "$a2"
    say "group: members $a1 $a2, chosen $b"
    for c in a b; do rmdir "$p/$c"; done
    rmdir "$p"
}

scenario_storm() {
    new_cg oomwatch-test-storm 16M
    i=0
    while [ "$i" -lt 14 ]; do
        run_in $CGROOT/oomwatch-test-storm memhog hog 64
        wait_gone $!
        i=$((i + 1))
    done
    say "storm: 14 kills, now one after the kernel's 5 s window"
    sleep 5.5
    run_in $CGROOT/oomwatch-test-storm memhog hog 64
    wait_gone $!
    drop_cg oomwatch-test-storm
}

# Names with the summary line's separators; a comm with a newline and a
# byte that is not UTF-8 (through a symlink: comm is the exec'd name).
scenario_hostile() {
    name='oomwatch-test-h,task=a,pid=1 (x):y'
    new_cg "$name" 64M
    mkdir -p /tmp/comm
    ln -sf /usr/bin/memhog "/tmp/comm/x) total-vm:1kB"
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "/tmp/comm/x) total-vm:1kB" hog 256' "$CGROOT/$name" &
    wait_gone $!
    drop_cg "$name"
    name2="$(printf 'oomwatch-test-t\tl,oom_memcg=\303\251')"
    new_cg "$name2" 64M || say "hostile: mkdir $name2 failed"
    comm2="$(printf 'a,pid=2\n(\377)=')"
    ln -sf /usr/bin/memhog "/tmp/comm/$comm2" || say "hostile: ln failed"
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$1" hog 256' "$CGROOT/$name2" "/tmp/comm/$comm2" &
    wait_gone $!
    drop_cg "$name2"
    say "hostile: done"
}

# The host runs out: no limit anywhere, the hog grows (in steps the
# overcommit heuristic lets through each) past what the VM has.
# oom_score_adj 1000 makes it the victim, whatever else runs.
scenario_global() {
    mkdir "$CGROOT/oomwatch-test-global"
    sh -c 'echo $$ > "$0/cgroup.procs" && echo 1000 > /proc/self/oom_score_adj && exec memhog leak 64 500' "$CGROOT/oomwatch-test-global" &
    wait_gone $!
    say "global: victim $!"
    rmdir "$CGROOT/oomwatch-test-global"
}

# printk timestamps against CLOCK_MONOTONIC on the guest (JSON, not a fixture).
scenario_clock() {
    mkdir -p /tmp/clock
    kmsg_capture /tmp/clock clock > /dev/null 2>&1
    echo "OOMWATCH-KMSG-CLOCK $(tr -d '\n ' < /tmp/clock/clock.json)"
}

capture_main() {
    say "kmsg capture on $(uname -r)"
    echo "OOMWATCH-KMSG-KERNEL $(uname -r)"
    for s in ${OOMWATCH_KMSG_SCENARIOS:-plain not_trigger shmem group storm hostile global}; do
        s=$(echo "$s" | tr ',' ' ')
        for one in $s; do
            say "scenario $one"
            capture_start "$one"
            "scenario_$one"
            capture_stop "$one"
        done
    done
    echo "OOMWATCH-KMSG-END"
}
