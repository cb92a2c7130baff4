//! What a local user with access to the event socket can do to it: take
//! every slot by connecting and hanging up, find the daemon full, or
//! replace the socket when its directory lets them. Real connections from
//! this process, and `oomwatch status`/`tail` as a user runs them.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::MetadataExt as _, fs::PermissionsExt as _, net::UnixStream, process::CommandExt as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use oomwatch_tests::*;

const MIB: u64 = 1 << 20;

fn status(daemon: &Daemon) -> std::process::Output {
    Command::new(oomwatch_bin()).args(["status", "--json", "--socket"]).arg(&daemon.socket).output().expect("oomwatch status")
}

fn assert_status_works(daemon: &Daemon, when: &str) {
    let t = Instant::now();
    let out = status(daemon);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{when}: oomwatch status failed: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{when}: status printed non-JSON ({e})"));
    assert!(v["cgroups"].is_object() || v["cgroups"].is_number(), "{when}: {v}");
    println!("{when}: oomwatch status answered in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}

#[test]
fn clients_that_hang_up_give_their_slot_back_at_once() {
    if !require_root("clients_that_hang_up_give_their_slot_back_at_once") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let published = |m: &str| metric_value(m, "oomwatch_events_published_total").unwrap_or(-1.0);
    let events_before = published(&daemon.metrics());
    // 2,000 clients ask for a tail and hang up; some without a word.
    let t = Instant::now();
    for i in 0..2000 {
        let mut s = UnixStream::connect(&daemon.socket).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        if i % 2 == 0 {
            let _ = s.write_all(b"{\"op\":\"tail\"}\n");
        }
        drop(s);
    }
    println!("2,000 connections opened and closed in {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    // No event in between could have freed the slots (a quiet daemon).
    assert_status_works(&daemon, "right after");
    let out = Command::new(oomwatch_bin()).args(["alerts", "--json", "--socket"]).arg(&daemon.socket).output().unwrap();
    assert!(out.status.success(), "oomwatch alerts: {}", String::from_utf8_lossy(&out.stderr));
    let mut tail = Tail::start(&daemon, &["--kind", "oom_kill"]);
    // Events would free the slots of clients that hung up (their next
    // write fails); this test is about a quiet daemon.
    println!("events published during the churn: {}", published(&daemon.metrics()) - events_before);
    // The tail is live: a real kill reaches it.
    let cg = TestCgroup::new("sockslots", Some(48 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("the hog is OOM-killed");
    assert!(
        tail.wait_for(Duration::from_secs(15), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == hog.pid()).is_some(),
        "oomwatch tail did not get the kill:\n{}",
        daemon.log_text()
    );
}

/// `oomwatch tail --kind oom_kill` and a client's `kinds`: the daemon sends
/// only what was asked for, live and replayed from the journal, so the
/// client is not even woken for the rest (victim_exit, kill_explained...).
#[test]
fn a_client_gets_only_the_kinds_and_cgroups_it_asked_for_live_and_replayed() {
    if !require_root("a_client_gets_only_the_kinds_and_cgroups_it_asked_for_live_and_replayed") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut everything = Tail::connect(&daemon);
    let mut kills = Tail::connect_with(&daemon, r#"{"op":"tail","kinds":["oom_kill"]}"#);
    let mut elsewhere = Tail::connect_with(&daemon, r#"{"op":"tail","kinds":["oom_kill"],"cgroup":"/no-such-place/*"}"#);
    let mut cli = Tail::start(&daemon, &["--kind", "victim_exit"]);
    let cg = TestCgroup::new("kindfilter", Some(48 * MIB));
    let mut hog = ChildGuard(cg.spawn(memhog().args(["hog", "200"])));
    hog.wait_timeout(Duration::from_secs(30)).expect("the hog is OOM-killed");
    let pid = hog.pid();
    let is_exit = |v: &Value| v["kind"] == "victim_exit" && v["pid"] == pid;
    everything.wait_for(Duration::from_secs(15), is_exit).unwrap_or_else(|| panic!("no victim_exit for {pid}: {:?}", everything.seen));
    kills.wait_for(Duration::from_secs(15), |v| v["kind"] == "oom_kill" && v["victim"]["pid"] == pid).expect("the kill");
    cli.wait_for(Duration::from_secs(15), is_exit).expect("oomwatch tail --kind victim_exit gets the exit");
    // What the unfiltered client got after the kill has reached the others.
    everything.wait_for(Duration::from_secs(2), |_| false);
    kills.wait_for(Duration::from_secs(1), |_| false);
    elsewhere.wait_for(Duration::from_millis(100), |_| false);
    let kinds = |t: &Tail| t.seen.iter().map(|(v, _)| v["kind"].as_str().unwrap_or("?").to_owned()).collect::<std::collections::BTreeSet<_>>();
    println!("unfiltered client: {:?}; kills only: {:?}", kinds(&everything), kinds(&kills));
    assert!(kinds(&everything).len() > 1, "the kill brought other events too: {:?}", kinds(&everything));
    assert_eq!(kinds(&kills), ["oom_kill".to_owned()].into(), "a client that asked for kills got: {:?}", kills.seen);
    assert!(elsewhere.seen.is_empty(), "a client of another cgroup got: {:?}", elsewhere.seen);
    // The same filter on a replay from the journal.
    let mut replay = Tail::connect_with(&daemon, r#"{"op":"tail","since_seq":0,"kinds":["victim_exit"]}"#);
    replay.wait_for(Duration::from_secs(10), is_exit).expect("the exit, replayed");
    replay.wait_for(Duration::from_millis(500), |_| false);
    assert!(replay.seen.iter().all(|(v, _)| v["kind"] == "victim_exit"), "replayed: {:?}", replay.seen);
}

#[test]
fn a_full_daemon_says_so_in_one_line_and_frees_slots_of_clients_that_leave() {
    if !require_root("a_full_daemon_says_so_in_one_line_and_frees_slots_of_clients_that_leave") {
        return;
    }
    let daemon = Daemon::start(&[]);
    // 128 tail clients that stay: every slot (root may use them all).
    let mut held: Vec<UnixStream> = (0..128)
        .map(|_| {
            let mut s = UnixStream::connect(&daemon.socket).unwrap();
            s.write_all(b"{\"op\":\"tail\"}\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for cmd in ["status", "alerts", "tail"] {
        let t = Instant::now();
        let out = Command::new(oomwatch_bin())
            .args([cmd, "--socket"])
            .arg(&daemon.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        println!("oomwatch {cmd} on a full daemon ({:.0} ms): {err}", t.elapsed().as_secs_f64() * 1e3);
        assert!(!out.status.success(), "oomwatch {cmd} succeeded on a full daemon");
        assert_eq!(err.lines().count(), 1, "oomwatch {cmd}: one line: {err}");
        assert!(err.contains("refused") && err.contains("too many clients") && err.contains("128"), "oomwatch {cmd}: {err}");
        assert!(t.elapsed() < Duration::from_secs(5), "oomwatch {cmd} took {:?} to say so", t.elapsed());
    }
    // A client that sends nothing yet reads the same refusal.
    let mut s = UnixStream::connect(&daemon.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).unwrap();
    assert!(line.contains("\"kind\":\"error\"") && line.contains("too many clients"), "{line}");
    // One leaves: its slot is free at once, with no event in between.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(100));
    assert_status_works(&daemon, "after one of 128 left");
    drop(held);
}

/// umask 0, as a careless service manager might leave it: the socket's
/// directory must still not be writable (or even searchable) by others.
#[test]
fn with_umask_0_other_users_cannot_replace_the_socket() {
    if !require_root("with_umask_0_other_users_cannot_replace_the_socket") {
        return;
    }
    let dir = temp_dir("umask0");
    let run = dir.0.join("run").join("oomwatch");
    let socket = run.join("events.sock");
    let log = dir.0.join("daemon.log");
    let mut cmd = Command::new(oomwatch_bin());
    cmd.args(["daemon", "--listen", "127.0.0.1:0", "--socket"])
        .arg(&socket)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap());
    // SAFETY: umask(2) between fork and exec is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let _daemon = ChildGuard(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(socket.exists() && UnixStream::connect(&socket).is_ok()) {
        assert!(Instant::now() < deadline, "daemon not serving {}:\n{}", socket.display(), std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in [dir.0.join("run"), run.clone()] {
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o7777;
        println!("{}: mode {mode:04o}", d.display());
        assert_eq!(mode & 0o027, 0, "{} is mode {mode:04o} under umask 0", d.display());
    }
    let ino = std::fs::metadata(&socket).unwrap().ino();
    // An unprivileged user tries to put its own socket in the daemon's place.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", "rm -f \"$0\" && : > \"$0\""])
        .arg(&socket)
        .output()
        .expect("setpriv");
    println!("uid 65534 replacing the socket: exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr).trim());
    assert!(!out.status.success(), "an unprivileged user removed the daemon's socket");
    assert_eq!(std::fs::metadata(&socket).unwrap().ino(), ino, "the socket is the daemon's own");
    let out = Command::new(oomwatch_bin()).args(["status", "--json", "--socket"]).arg(&socket).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_socket_directory_others_can_write_is_refused_in_one_line() {
    let dir = temp_dir("opendir");
    let open = dir.0.join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = one_line_refusal(Command::new(oomwatch_bin()).args(["daemon", "--listen", "127.0.0.1:0", "--socket"]).arg(open.join("events.sock")));
    assert!(err.contains(&open.display().to_string()) && err.contains("another user could replace"), "{err}");
}
