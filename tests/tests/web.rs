//! /metrics behind TLS and basic auth, configured the way Prometheus
//! exporters are (a web config file), checked with curl.

use std::process::Command;

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
