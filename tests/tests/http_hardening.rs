//! What a hostile neighbour can do to /metrics and /healthz before any
//! authentication: hold connections idle, or send request heads slowly
//! (slowloris) and reconnect whenever it is dropped; from one address, and
//! from ten. Meanwhile a scraper (keep-alive, as Prometheus scrapes) and a
//! liveness probe (a new connection each time, as the kubelet probes) must
//! keep getting answers, each within ANSWER_BOUND.
//!
//! Every client is a real TCP connection from this process to the daemon,
//! from its own 127.0.0.0/8 address: the scraper and the probe from two
//! addresses of their own, as they would come from Prometheus' and the
//! kubelet's hosts.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use oomwatch_tests::*;

/// Every answer to the scraper and the probe comes within this, attack or not.
const ANSWER_BOUND: Duration = Duration::from_secs(1);
const PHASE: Duration = Duration::from_secs(8);
const SCRAPER: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
const PROBE: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 2);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The tests here measure answer times: one at a time, even under
/// `--test-threads=2`.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` attacker addresses from 127.0.2.1 on.
fn attacker_addresses(n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(127, 0, 2, i)).collect()
}

/// Prometheus: one kept-alive connection, GET /metrics every 250 ms. A
/// kept-alive connection the daemon closed is replaced and the scrape
/// retried once, as Go's HTTP client does; the time includes that.
fn scraper(port: u16, stop: &AtomicBool) -> Latencies {
    let mut out = Latencies::default();
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Relaxed) {
        let t = Instant::now();
        let mut result = Err("not tried".to_owned());
        for attempt in 0..2 {
            let stream = match conn.take() {
                Some(s) => s,
                None => match connect_from(SCRAPER, port, CLIENT_TIMEOUT) {
                    Ok(s) => s,
                    Err(e) => {
                        result = Err(format!("connect: {e}"));
                        break;
                    }
                },
            };
            let mut stream = stream;
            match http_request(&mut stream, "GET", "/metrics", &[]) {
                Ok(r) if r.status == 200 && r.body.starts_with(b"# HELP") => {
                    conn = Some(stream);
                    result = Ok(());
                    break;
                }
                Ok(r) => {
                    result = Err(format!("HTTP {}", r.status));
                    break;
                }
                Err(e) => result = Err(format!("attempt {attempt}: {e}")),
            }
        }
        match result {
            Ok(()) => out.times.push(t.elapsed()),
            Err(e) => out.failures.push(e),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out
}

/// The kubelet: a new connection for each GET /healthz, every 250 ms.
fn probe(port: u16, stop: &AtomicBool) -> Latencies {
    let mut out = Latencies::default();
    while !stop.load(Relaxed) {
        let t = Instant::now();
        let answer = connect_from(PROBE, port, CLIENT_TIMEOUT).and_then(|mut s| http_request(&mut s, "GET", "/healthz", &[("Connection", "close")]));
        match answer {
            Ok(r) if r.status == 200 && r.body == b"ok\n" => out.times.push(t.elapsed()),
            Ok(r) => out.failures.push(format!("HTTP {}", r.status)),
            Err(e) => out.failures.push(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out
}

/// Holds a kept-alive connection without asking anything more, and opens
/// a new one whenever the daemon closes it. Returns connections opened.
fn idle_holder(from: Ipv4Addr, port: u16, stop: &AtomicBool) -> u64 {
    let mut opened = 0;
    while !stop.load(Relaxed) {
        let Ok(mut s) = connect_from(from, port, Duration::from_millis(500)) else { continue };
        opened += 1;
        if http_request(&mut s, "GET", "/healthz", &[]).is_err() {
            continue;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut byte = [0u8; 1];
        while !stop.load(Relaxed) {
            match s.read(&mut byte) {
                Ok(0) => break,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                _ => break,
            }
        }
    }
    opened
}

/// Slowloris: a request head one byte every 200 ms, never finished; a new
/// connection whenever the daemon closes this one. Returns connections opened.
fn slowloris(from: Ipv4Addr, port: u16, stop: &AtomicBool) -> u64 {
    let mut opened = 0;
    while !stop.load(Relaxed) {
        let Ok(mut s) = connect_from(from, port, Duration::from_millis(500)) else { continue };
        opened += 1;
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n").is_err() {
            continue;
        }
        let mut byte = [0u8; 1];
        while !stop.load(Relaxed) {
            if s.write_all(b"X").is_err() {
                break;
            }
            // A closed connection reads as end of file (or a reset).
            match s.read(&mut byte) {
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                _ => break,
            }
        }
    }
    opened
}

type Attacker = fn(Ipv4Addr, u16, &AtomicBool) -> u64;

/// Runs `per_address` attackers from each address for PHASE while the
/// scraper and the probe run; checks their answers; returns the summary.
fn under_attack(daemon: &Daemon, name: &str, attacker: Attacker, addresses: &[Ipv4Addr], per_address: usize) {
    let port = daemon.port;
    let mut attackers = Crowd::default();
    for &from in addresses {
        for _ in 0..per_address {
            attackers.spawn(move |stop| attacker(from, port, stop));
        }
    }
    // Let the attack fill the pool before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let mut scrapers = Crowd::default();
    scrapers.spawn(move |stop| scraper(port, stop));
    let mut probes = Crowd::default();
    probes.spawn(move |stop| probe(port, stop));
    std::thread::sleep(PHASE);
    let scraped = scrapers.finish().pop().unwrap();
    let probed = probes.finish().pop().unwrap();
    let opened: u64 = attackers.finish().iter().sum();
    println!(
        "{name}: {} attackers from {} address(es) opened {opened} connections in {:.0} s\n  scraper /metrics: {}\n  probe /healthz:   {}",
        addresses.len() * per_address,
        addresses.len(),
        PHASE.as_secs_f64() + 2.0,
        scraped.summary(),
        probed.summary()
    );
    for (who, l) in [("scraper", &scraped), ("probe", &probed)] {
        assert!(l.failures.is_empty(), "{name}: the {who} failed: {}\n{}", l.summary(), daemon.log_text());
        assert!(l.times.len() >= 10, "{name}: the {who} got too few answers: {}", l.summary());
        assert!(l.max() <= ANSWER_BOUND, "{name}: the {who} waited longer than {ANSWER_BOUND:?}: {}", l.summary());
    }
    assert!(opened >= (addresses.len() * per_address) as u64, "{name}: the attack ran");
}

#[test]
fn metrics_and_healthz_answer_through_an_idle_keepalive_flood() {
    if !require_root("metrics_and_healthz_answer_through_an_idle_keepalive_flood") {
        return;
    }
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    under_attack(&daemon, "idle keep-alive, 1 address", idle_holder, &attacker_addresses(1), 100);
    under_attack(&daemon, "idle keep-alive, 10 addresses", idle_holder, &attacker_addresses(10), 10);
}

#[test]
fn metrics_and_healthz_answer_through_slowloris_that_reconnects() {
    if !require_root("metrics_and_healthz_answer_through_slowloris_that_reconnects") {
        return;
    }
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    under_attack(&daemon, "slowloris, 1 address", slowloris, &attacker_addresses(1), 70);
    under_attack(&daemon, "slowloris, 10 addresses", slowloris, &attacker_addresses(10), 7);
}

#[test]
fn head_is_get_without_the_body() {
    if !require_root("head_is_get_without_the_body") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let mut s = connect_from(Ipv4Addr::LOCALHOST, daemon.port, CLIENT_TIMEOUT).unwrap();
    for path in ["/metrics", "/healthz"] {
        let get = http_request(&mut s, "GET", path, &[]).unwrap();
        let head = http_request(&mut s, "HEAD", path, &[]).unwrap();
        assert_eq!((get.status, head.status), (200, 200), "{path}");
        assert_eq!(get.header("content-type"), head.header("content-type"), "{path}");
        let len: usize = head.header("content-length").and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("{path}: HEAD has a Content-Length: {head:?}"));
        assert!(len > 0 && head.body.is_empty(), "{path}: {head:?}");
        if path == "/healthz" {
            assert_eq!(len, get.body.len());
        }
    }
    // Still in step after two HEADs: the connection carried no stray body.
    assert_eq!(http_request(&mut s, "GET", "/healthz", &[]).unwrap().body, b"ok\n");
    let post = http_request(&mut s, "POST", "/metrics", &[("Content-Length", "0")]).unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

#[test]
fn a_client_that_stops_reading_its_scrapes_is_let_go() {
    if !require_root("a_client_that_stops_reading_its_scrapes_is_let_go") {
        return;
    }
    let daemon = Daemon::start(&[]);
    // Eight connections (one address' worth) with a tiny receive window ask
    // for /metrics 512 times, pipelined, and never read.
    let from = Ipv4Addr::new(127, 0, 3, 1);
    let mut stuck = Vec::new();
    for _ in 0..8 {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind(&std::net::SocketAddr::from((from, 0)).into()).unwrap();
        socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], daemon.port)).into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.write_all(&b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(512)).unwrap();
        stuck.push(s);
    }
    // The same address is still answered meanwhile.
    let t = Instant::now();
    let mut s = connect_from(from, daemon.port, CLIENT_TIMEOUT).unwrap();
    assert_eq!(http_request(&mut s, "GET", "/healthz", &[]).unwrap().status, 200);
    println!("a ninth connection from the stalled readers' address answered in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    // After the write-stall limit (10 s) each stalled connection is closed:
    // reading it now ends, instead of letting the daemon go on writing.
    std::thread::sleep(Duration::from_secs(12));
    for (i, s) in stuck.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0usize;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    panic!("connection {i} was kept open after it stopped reading ({received} bytes, then nothing)")
                }
                Err(_) => break,
            }
        }
        println!("stalled connection {i}: closed by the daemon after {received} bytes");
    }
}
