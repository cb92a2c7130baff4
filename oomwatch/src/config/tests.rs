use super::*;

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(Config::parse("", "x.toml").unwrap(), Config::default());
}

#[test]
fn defaults_round_trip_through_toml() {
    let text = defaults_toml();
    assert_eq!(Config::parse(&text, "defaults.toml").unwrap(), Config::default(), "{text}");
}

#[test]
fn reads_thresholds_and_sinks() {
    let text = r#"
        [alerts.oom_forecast]
        warning_eta = "90s"
        critical_eta = "20s"
        for = "3s"

        [[sinks.alertmanager]]
        url = "http://127.0.0.1:9093"
        labels = { cluster = "eu-1" }

        [[sinks.exec]]
        command = ["/bin/true", "x"]
        env = { TEAM = "infra" }
        timeout = "2s"
    "#;
    let c = Config::parse(text, "x.toml").unwrap();
    assert_eq!(c.alerts.oom_forecast.warning_eta, Duration::from_secs(90));
    assert_eq!(c.alerts.oom_forecast.for_, Duration::from_secs(3));
    assert_eq!(c.sinks.alertmanager[0].resend_interval, Duration::from_secs(30));
    assert_eq!(c.sinks.alertmanager[0].labels["cluster"], "eu-1");
    assert_eq!(c.sinks.exec[0].env["TEAM"], "infra");
    assert_eq!(c.sinks.exec[0].max_concurrent, 4);
}

fn err(text: &str) -> String {
    let e = Config::parse(text, "/etc/oomwatch.toml").unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.starts_with("/etc/oomwatch.toml: "), "names the file: {e}");
    e
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let e = err("[cgroups]\nmax_cgroups = \"lots\"\n");
    assert!(e.contains("cgroups.max_cgroups") && e.contains("line 2"), "{e}");
}

#[test]
fn unknown_key_names_it() {
    let e = err("[alerts.oom_forecast]\nwarning = \"60s\"\n");
    assert!(e.contains("alerts.oom_forecast") && e.contains("warning"), "{e}");
}

#[test]
fn bad_duration_names_the_key() {
    let e = err("[alerts.oom_forecast]\nwarning_eta = \"soon\"\n");
    assert!(e.contains("alerts.oom_forecast.warning_eta") && e.contains("soon"), "{e}");
}

#[test]
fn impossible_thresholds_are_refused() {
    let e = err("[alerts.oom_forecast]\nwarning_eta = \"10s\"\ncritical_eta = \"15s\"\n");
    assert!(e.contains("alerts.oom_forecast.critical_eta") && e.contains("shorter"), "{e}");
    let e = err("[alerts.memory_pressure]\nsome_avg10_percent = 150.0\n");
    assert!(e.contains("some_avg10_percent"), "{e}");
    let e = err("[pressure]\ntrigger_window = \"30s\"\n");
    assert!(e.contains("pressure.trigger_window"), "{e}");
    let e = err("[[sinks.webhook]]\nurl = \"ftp://x\"\n");
    assert!(e.contains("sinks.webhook.url"), "{e}");
    let e = err("[[sinks.exec]]\ncommand = []\n");
    assert!(e.contains("sinks.exec.command"), "{e}");
}

#[test]
fn syntax_errors_are_one_line_too() {
    let e = err("[alerts\n");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn control_characters_from_the_file_do_not_break_the_line() {
    // Found by the `config` fuzz target: a "\n" escape in a key or in a
    // value that validation quotes made the error two lines.
    let e = err("[[sinks.alertmanager]]\nurl = \"http:/?127.0.\\u000a0.1:900/hook\"\n");
    assert!(e.contains(r"'http:/?127.0.\n0.1:900/hook'"), "{e}");
    let e = err("[cgroups]\ninclude = [\"a\\nb[\"]\n");
    assert!(e.contains(r"'a\nb['"), "{e}");
    let e = err("[sinks]\n\"a\\nb\" = 1\n");
    assert!(e.contains(r"sinks.a\nb"), "{e}");
    err("[[sinks.exec]]\ncommand = [\"x\"]\nenv = { \"A\\rB\" = 1 }\n");
}

#[test]
fn urls_the_http_client_would_refuse_are_refused_here() {
    // These passed validation, then every alert sent to them failed. The
    // `config` fuzz target now checks that accepted sink URLs parse.
    for url in ["http://127.0.0.1:9093/a b", "http://?x", "http://h\\u0000/", "http://[::1/"] {
        let e = err(&format!("[[sinks.webhook]]\nurl = \"{url}\"\n"));
        assert!(e.contains("sinks.webhook.url"), "{e}");
    }
    for url in ["http://127.0.0.1:9093", "http://[::1]:8080/hook?team=infra", "http://alerts.example:80/"] {
        assert!(check_url(url).is_ok(), "{url}");
    }
}

#[test]
fn missing_file_names_it() {
    let e = Config::load(Path::new("/nonexistent/oomwatch.toml")).unwrap_err().to_string();
    assert!(e.starts_with("/nonexistent/oomwatch.toml: "), "{e}");
}

#[test]
fn push_mode_keys() {
    let c = Config::parse("[daemon]\npush_gateway = \"http://pgw:9091\"\npush_interval = \"30s\"\n", "x.toml").unwrap();
    assert_eq!(c.daemon.push_gateway.as_deref(), Some("http://pgw:9091"));
    assert_eq!(c.daemon.push_interval, Duration::from_secs(30));
    assert_eq!(Config::default().daemon.push_gateway, None);
    assert!(!defaults_toml().contains("push_gateway"), "unset by default");
    assert!(defaults_toml().contains("push_interval = \"15s\""), "{}", defaults_toml());

    let e = err("[daemon]\npush_gateway = \"pgw:9091\"\n");
    assert!(e.contains("daemon.push_gateway") && e.contains("http://"), "{e}");
    let e = err("[daemon]\npush_gateway = \"http://pgw:9091/metrics/job/x\"\n");
    assert!(e.contains("daemon.push_gateway") && e.contains("base URL"), "{e}");
    let e = err("[daemon]\npush_interval = \"100ms\"\n");
    assert!(e.contains("daemon.push_interval") && e.contains("1s"), "{e}");
    let e = err("[daemon]\npush_interval = \"1h\"\n");
    assert!(e.contains("daemon.push_interval") && e.contains("5m"), "{e}");
    let e = err("[daemon]\npush_interval = 15\n");
    assert!(e.contains("daemon.push_interval"), "{e}");
}
