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
    assert!(e.contains("sinks.webhook[0].url"), "{e}");
    let e = err("[[sinks.exec]]\ncommand = []\n");
    assert!(e.contains("sinks.exec[0].command"), "{e}");
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
        assert!(e.contains("sinks.webhook[0].url"), "{e}");
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

/// Each of these passed `check` and then panicked the daemon at start or on
/// SIGHUP (a tokio semaphore past MAX_PERMITS, a zero interval, an instant
/// past the end of time), or silently killed a sink or all alerting.
#[test]
fn values_that_crashed_the_daemon_are_refused_naming_the_key() {
    for (text, key) in [
        ("[[sinks.webhook]]\nurl = \"http://h\"\nqueue = 18446744073709551615\n", "sinks.webhook[0].queue"),
        ("[[sinks.alertmanager]]\nurl = \"http://h\"\nresend_interval = \"0s\"\n", "sinks.alertmanager[0].resend_interval"),
        ("[[sinks.alertmanager]]\nurl = \"http://h\"\nresend_interval = \"500000000000y\"\n", "sinks.alertmanager[0].resend_interval"),
        ("[[sinks.exec]]\ncommand = [\"/bin/true\"]\nmax_concurrent = 18446744073709551615\n", "sinks.exec[0].max_concurrent"),
        ("[alerts]\nevaluate_every = \"500000000000y\"\n", "alerts.evaluate_every"),
        ("[cgroups]\nremoval_grace = \"500000000000y\"\n", "cgroups.removal_grace"),
        ("[alerts.oom_kill]\nresolve_after = \"500000000000y\"\n", "alerts.oom_kill.resolve_after"),
        ("[forecast]\nhorizon = \"500000000000y\"\n", "forecast.horizon"),
        ("[daemon]\nbacklog = 18446744073709551615\n", "daemon.backlog"),
    ] {
        let e = err(text);
        assert!(e.contains(key) && e.contains("outside"), "{text}: {e}");
    }
}

#[test]
fn exec_hooks_must_be_absolute_paths_to_executables() {
    for (program, why) in [("page", "not an absolute path"), ("/nonexistent/page", "No such file"), ("/proc/self/status", "not an executable file")] {
        let e = err(&format!("[[sinks.exec]]\ncommand = [\"{program}\"]\n"));
        assert!(e.contains("sinks.exec[0].command") && e.contains(why), "{program}: {e}");
    }
    assert!(Config::parse("[[sinks.exec]]\ncommand = [\"/bin/true\"]\n", "x.toml").is_ok());
}

#[test]
fn credentials_in_urls_are_never_shown() {
    assert_eq!(redact_url("http://ops:s3cret@am:9093/api"), "http://ops:***@am:9093/api");
    assert_eq!(redact_url("http://am:9093/a@b"), "http://am:9093/a@b", "an @ in the path is not userinfo");
    assert_eq!(redact_url("http://token@am"), "http://token:***@am");
    let e = err("[[sinks.webhook]]\nurl = \"http://ops:s3cret@h/a b\"\n");
    assert!(!e.contains("s3cret") && e.contains("ops:***@h"), "{e}");
    assert!(check_url("http://ops:s3cret@am:9093").is_ok(), "credentials are allowed: sent as basic auth");
}

/// Any configuration the range table accepts is one the daemon's pieces
/// can be built from: values at and just past every bound, at random.
#[test]
fn every_accepted_value_is_inside_its_range() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut accepted = 0;
    for _ in 0..2000 {
        let mut c = Config::default();
        c.sinks.alertmanager.push(AlertmanagerSink::example());
        c.sinks.exec.push(ExecSink { command: vec!["/bin/true".into()], ..ExecSink::example() });
        let extreme_u = |r: u64| [0, 1, 2, 63, 64, 65, 100_000, 100_001, 1_000_001, u64::MAX / 2, u64::MAX][(r % 11) as usize];
        let extreme_d = |r: u64| {
            [Duration::ZERO, Duration::from_nanos(1), Duration::from_millis(100), Duration::from_secs(1), Duration::from_secs(86_401), Duration::MAX][(r % 6) as usize]
        };
        match rand() % 8 {
            0 => c.sinks.alertmanager[0].queue = extreme_u(rand()) as usize,
            1 => c.sinks.alertmanager[0].resend_interval = extreme_d(rand()),
            2 => c.sinks.exec[0].max_concurrent = extreme_u(rand()) as usize,
            3 => c.alerts.evaluate_every = extreme_d(rand()),
            4 => c.daemon.stream_buffer = extreme_u(rand()) as usize,
            5 => c.alerts.oom_kill.resolve_after = extreme_d(rand()),
            6 => c.cgroups.sample_interval = extreme_d(rand()),
            _ => c.forecast.horizon = extreme_d(rand()),
        }
        if c.validate().is_ok() {
            accepted += 1;
            ranges::each_setting(&c, &mut |key, value, range| {
                assert!(ranges::check_ranges(&c).is_ok(), "{key} = {value} outside {range} was accepted");
            });
            // What the daemon computes from them must not overflow.
            let now = std::time::Instant::now();
            for d in [c.alerts.evaluate_every * 2, c.alerts.oom_kill.resolve_after, c.forecast.horizon, c.cgroups.removal_grace] {
                assert!(now.checked_add(d).is_some());
            }
        }
    }
    assert!(accepted > 100, "the generator must also produce valid configurations ({accepted})");
}

#[test]
fn workload_roots_are_settings_and_must_be_absolute() {
    let c = Config::parse("[workloads]\ndocker_data_root = \"/data/docker\"\nmax_remembered = 100\n", "x.toml").unwrap();
    assert_eq!(c.workloads.roots().docker_data_root, Path::new("/data/docker"));
    assert_eq!(c.workloads.roots().containerd_state, Path::new("/run/containerd"), "the others keep their defaults");
    assert_eq!(c.workloads.max_remembered, 100);
    let e = err("[workloads]\ncontainerd_state = \"run/containerd\"\n");
    assert!(e.contains("workloads.containerd_state") && e.contains("not an absolute path"), "{e}");
    let e = err("[workloads]\nmax_remembered = 0\n");
    assert!(e.contains("workloads.max_remembered"), "{e}");
    let e = err("[workloads]\ndocker_root = \"/x\"\n");
    assert!(e.contains("docker_root"), "{e}");
}

#[test]
fn reads_shipping_sinks_with_their_defaults_and_names() {
    let text = r#"
        [sinks.journald]
        enabled = true
        socket = "/run/j/socket"

        [[sinks.otlp]]
        endpoint = "http://collector:4318"
        encoding = "json"
        headers = { x-scope-orgid = "tenant-1" }

        [[sinks.otlp]]
        name = "siem"
        endpoint = "http://siem:4318/v1/logs"
        start_at = "beginning"
        max_backlog = 10

        [[sinks.file]]
        path = "/var/log/oomwatch/events.json"
        max_size_mib = 1
        backups = 0
    "#;
    let c = Config::parse(text, "x.toml").unwrap();
    assert_eq!(c.sinks.journald.enabled, shipping::Switch::Fixed(true));
    assert_eq!(c.sinks.otlp[0].encoding, shipping::OtlpEncoding::Json);
    assert_eq!(c.sinks.otlp[0].headers["x-scope-orgid"], "tenant-1");
    assert_eq!(c.sinks.otlp[0].timeout, Duration::from_secs(10));
    assert_eq!(c.sinks.otlp[0].batch, 256);
    assert_eq!(c.sinks.otlp[1].delivery().start_at, shipping::StartAt::Beginning);
    assert_eq!(c.sinks.otlp[1].max_backlog, 10);
    assert_eq!(c.sinks.file[0].backups, 0);
    let (otlp, file) = shipping::sink_names(&c.sinks.otlp, &c.sinks.file);
    assert_eq!((otlp, file), (vec!["otlp".to_owned(), "siem".to_owned()], vec!["file".to_owned()]));
    assert_eq!(Config::default().sinks.journald.enabled, shipping::Switch::Auto, "journald: on where its socket exists");
    assert_eq!(Config::parse("[sinks.journald]\nenabled = \"auto\"\n", "x.toml").unwrap(), Config::default());
}

#[test]
fn refuses_shipping_sinks_that_cannot_work_naming_the_key() {
    let e = err("[[sinks.otlp]]\nendpoint = \"grpc://x:4317\"\n");
    assert!(e.contains("sinks.otlp[0].endpoint"), "{e}");
    let e = err("[[sinks.otlp]]\nendpoint = \"http://x:4318\"\nheaders = { content-type = \"text/plain\" }\n");
    assert!(e.contains("sinks.otlp[0].headers") && e.contains("content-type"), "{e}");
    let e = err("[[sinks.otlp]]\nendpoint = \"http://x:4318\"\nheaders = { \"a b\" = \"c\" }\n");
    assert!(e.contains("sinks.otlp[0].headers"), "{e}");
    let e = err("[[sinks.otlp]]\nendpoint = \"http://x:4318\"\nbatch = 0\n");
    assert!(e.contains("sinks.otlp[0].batch") && e.contains("1..=10000"), "{e}");
    let e = err("[[sinks.file]]\npath = \"events.json\"\n");
    assert!(e.contains("sinks.file[0].path") && e.contains("absolute"), "{e}");
    let e = err("[[sinks.file]]\npath = \"/a/e.json\"\nmax_size_mib = 0\n");
    assert!(e.contains("sinks.file[0].max_size_mib"), "{e}");
    let e = err("[[sinks.file]]\npath = \"/a/e.json\"\n[[sinks.file]]\nname = \"file\"\npath = \"/b/e.json\"\n");
    assert!(e.contains("sinks.file[1].name") && e.contains("another sink"), "{e}");
    let e = err("[[sinks.otlp]]\nname = \"Big Name\"\nendpoint = \"http://x:4318\"\n");
    assert!(e.contains("sinks.otlp[0].name"), "{e}");
    let e = err("[sinks.journald]\nenabled = \"sometimes\"\n");
    assert!(e.contains("sinks.journald"), "{e}");
    let e = err("[journal]\nenabled = false\n[[sinks.file]]\npath = \"/a/e.json\"\n");
    assert!(e.contains("journal.enabled") && e.contains("shipping"), "{e}");
    // journald on "auto" needs nothing: no journal, no journald.
    assert!(Config::parse("[journal]\nenabled = false\n", "x.toml").is_ok());
}
