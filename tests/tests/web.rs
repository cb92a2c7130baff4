//! /metrics behind TLS and basic auth, configured the way Prometheus
//! exporters are (a web config file), checked with curl; and what wrong
//! passwords cost the daemon (timing, CPU), over real connections.

use std::{
    net::Ipv4Addr,
    process::Command,
    sync::{Mutex, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use base64::Engine as _;

use oomwatch_tests::*;

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl").args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn metrics_behind_tls_and_basic_auth() {
    if !require_root("metrics_behind_tls_and_basic_auth") {
        return;
    }
    let dir = temp_dir("web");
    let (cert, key) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.0.join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{hash}'\n", cert.display(), key.display()),
    )
    .unwrap();
    let daemon = Daemon::start(&["--web-config", web.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{}/metrics", daemon.port);
    let ca = cert.to_str().unwrap();

    let (code, body) = curl(&["--cacert", ca, "-u", "prometheus:s3cret", &url]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("oomwatch_build_info"), "{body}");
    assert_eq!(curl(&["--cacert", ca, &url]).0, 401, "no credentials");
    assert_eq!(curl(&["--cacert", ca, "-u", "prometheus:wrong", &url]).0, 401, "wrong password");
    assert_eq!(curl(&["--cacert", ca, &format!("https://127.0.0.1:{}/healthz", daemon.port)]).0, 200, "liveness stays open");
    let (code, _) = curl(&[&format!("http://127.0.0.1:{}/metrics", daemon.port)]);
    assert_ne!(code, 200, "plain HTTP gets nothing");
    assert!(metric_value(&body, "oomwatch_probe_attached{probe=\"oom_mark_victim\"}") == Some(1.0));
}

#[test]
fn a_bad_web_config_is_refused_naming_the_key() {
    let dir = temp_dir("webbad");
    let web = dir.0.join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  prometheus: plaintext\n").unwrap();
    let err = one_line_refusal(
        Command::new(oomwatch_bin())
            .args(["daemon", "--listen", "127.0.0.1:0", "--web-config"])
            .arg(&web)
            .arg("--socket")
            .arg(dir.0.join("e.sock")),
    );
    assert!(err.contains("web.yml") && err.contains("basic_auth_users.prometheus"), "{err}");
}

/// Timing and CPU tests: one at a time, even under `--test-threads=2`.
static SERIAL: Mutex<()> = Mutex::new(());

/// The cost `htpasswd -B` users commonly pick, and the one measured in the
/// issue (63 ms a check here).
const COST: u32 = 10;

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

fn auth_daemon(dir: &TempDir) -> Daemon {
    let web = dir.0.join("web.yml");
    let hash = bcrypt::hash("s3cret", COST).unwrap();
    std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n")).unwrap();
    Daemon::start(&["--web-config", web.to_str().unwrap()])
}

/// One scrape with these credentials on a new connection: (status, time).
fn scrape_as(port: u16, from: Ipv4Addr, authorization: &str) -> (u16, Duration) {
    let t = Instant::now();
    let mut s = connect_from(from, port, Duration::from_secs(10)).unwrap();
    let r = http_request(&mut s, "GET", "/metrics", &[("Authorization", authorization), ("Connection", "close")]).unwrap();
    (r.status, t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn wrong_passwords_take_as_long_for_unknown_users_as_for_known_ones() {
    if !require_root("wrong_passwords_take_as_long_for_unknown_users_as_for_known_ones") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("webtiming");
    let daemon = auth_daemon(&dir);
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..8 {
        // A new password every time: nothing cached, every one is a bcrypt check.
        for (user, times) in [("prometheus", &mut known), ("nosuchuser", &mut unknown)] {
            let (status, took) = scrape_as(daemon.port, Ipv4Addr::LOCALHOST, &basic(user, &format!("guess-{i}")));
            assert_eq!(status, 401, "{user}");
            times.push(took);
            // Past the cool-down that follows a failed check.
            std::thread::sleep((took * 4).max(Duration::from_millis(300)));
        }
    }
    let (k, u) = (median(known), median(unknown));
    let ratio = k.as_secs_f64().max(u.as_secs_f64()) / k.as_secs_f64().min(u.as_secs_f64());
    println!("wrong password, median of 8: known user {:.1} ms, unknown user {:.1} ms (ratio {ratio:.2})", k.as_secs_f64() * 1e3, u.as_secs_f64() * 1e3);
    assert!(ratio < 1.5, "a wrong password for a known user takes {k:?}, for an unknown one {u:?}: users can be told apart by timing");
}

#[test]
fn a_wrong_password_flood_is_bounded_in_cpu_and_a_right_password_still_gets_in() {
    if !require_root("a_wrong_password_flood_is_bounded_in_cpu_and_a_right_password_still_gets_in") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp_dir("webflood");
    let daemon = auth_daemon(&dir);
    let port = daemon.port;
    const FLOOD: Duration = Duration::from_secs(10);
    // 16 parallel clients from 4 addresses, each a new guess per request,
    // answered or not, as fast as the daemon answers.
    let mut flood = Crowd::default();
    for i in 0..16u8 {
        let from = Ipv4Addr::new(127, 0, 4, 1 + i % 4);
        flood.spawn(move |stop| {
            let mut counts = [0u64; 3]; // 401, 503, other
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                let Ok(mut s) = connect_from(from, port, Duration::from_secs(10)) else { continue };
                while !stop.load(Relaxed) {
                    n += 1;
                    match http_request(&mut s, "GET", "/metrics", &[("Authorization", &basic("prometheus", &format!("guess-{i}-{n}")))]) {
                        Ok(r) if r.status == 401 => counts[0] += 1,
                        Ok(r) if r.status == 503 => counts[1] += 1,
                        Ok(_) => counts[2] += 1,
                        Err(_) => break,
                    }
                }
            }
            counts
        });
    }
    let cpu_before = cpu_seconds(daemon.pid());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    // The right password, first used during the flood (nothing cached), from
    // Prometheus' own address; then scrapes every second.
    let mut scrapes = Vec::new();
    while t0.elapsed() < FLOOD {
        let (status, took) = scrape_as(port, Ipv4Addr::new(127, 0, 1, 1), &basic("prometheus", "s3cret"));
        scrapes.push((status, took));
        std::thread::sleep(Duration::from_secs(1));
    }
    let wall = t0.elapsed();
    let cpu = cpu_seconds(daemon.pid()) - cpu_before;
    let counts = flood.finish().into_iter().fold([0u64; 3], |a, c| [a[0] + c[0], a[1] + c[1], a[2] + c[2]]);
    println!(
        "wrong-password flood, 16 clients from 4 addresses for {:.1} s: daemon used {cpu:.2} CPU-s ({:.0}% of one core); answers: {} x 401, {} x 503, {} other",
        wall.as_secs_f64(),
        100.0 * cpu / wall.as_secs_f64(),
        counts[0],
        counts[1],
        counts[2]
    );
    let first = scrapes[0];
    println!(
        "right password during the flood: first (uncached) HTTP {} in {:.0} ms; then {:?}",
        first.0,
        first.1.as_secs_f64() * 1e3,
        scrapes[1..].iter().map(|(s, t)| format!("{s} {:.0}ms", t.as_secs_f64() * 1e3)).collect::<Vec<_>>()
    );
    assert!(scrapes.iter().all(|(s, _)| *s == 200), "the right password was refused during the flood: {scrapes:?}");
    assert!(first.1 < Duration::from_secs(5), "the first scrape waited {:?}", first.1);
    assert!(counts[0] > 0, "the flood's guesses were checked");
    // One check at a time, then a cool-down of three times its length:
    // about a quarter of one core, whatever the flood.
    assert!(cpu < 0.4 * wall.as_secs_f64(), "the daemon used {cpu:.2} CPU-s in {wall:?}");
}

#[test]
fn a_malformed_bcrypt_hash_is_refused_at_start_and_by_check() {
    let dir = temp_dir("webhash");
    let web = dir.0.join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  prometheus: $2y$10$garbage\n").unwrap();
    let err = one_line_refusal(
        Command::new(oomwatch_bin())
            .args(["daemon", "--listen", "127.0.0.1:0", "--web-config"])
            .arg(&web)
            .arg("--socket")
            .arg(dir.0.join("e.sock")),
    );
    assert!(err.contains("web.yml") && err.contains("basic_auth_users.prometheus") && err.contains("bcrypt"), "{err}");
    let config = write_config(&dir, &format!("[daemon]\nweb_config = \"{}\"\n", web.display()));
    let err = one_line_refusal(Command::new(oomwatch_bin()).args(["check", "--config"]).arg(&config));
    assert!(err.contains("web.yml") && err.contains("basic_auth_users.prometheus") && err.contains("bcrypt"), "{err}");
}
