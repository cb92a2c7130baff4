//! The TOML configuration (`oomwatch::config::Config::parse`): never panic;
//! every error is one line (it goes to the log and to `oomwatch check`); a
//! configuration it accepts, written back as TOML, parses to the same value,
//! and its sink URLs are ones the HTTP client can send to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::config::Config;

/// The default configuration is about 2 KiB.
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    // Config::load reads the file with read_to_string.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text, "/etc/oomwatch/oomwatch.toml") {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(msg.lines().count(), 1, "{msg:?}");
            assert!(!msg.contains(['\r', '\n']), "{msg:?}");
            return;
        }
    };
    // What the sinks will send to (alert/sinks.rs) is a URL their HTTP client takes.
    let urls = config.sinks.alertmanager.iter().map(|s| format!("{}/api/v2/alerts", s.url.trim_end_matches('/')));
    for url in urls.chain(config.sinks.webhook.iter().map(|s| s.url.clone())) {
        let uri: http::Uri = url.parse().unwrap_or_else(|e| panic!("accepted {url:?}, which the sink cannot send to: {e}"));
        assert!(uri.host().is_some_and(|h| !h.is_empty()), "accepted {url:?}, which has no host");
    }
    let written = toml::to_string(&config).expect("an accepted configuration serializes");
    match Config::parse(&written, "rewritten") {
        Ok(again) => assert_eq!(again, config, "{written}"),
        Err(e) => panic!("the rewritten configuration does not parse: {e}\n{written}"),
    }
});
