//! The TOML configuration (`oomwatch::config::Config::parse`): never panic;
//! every error is one line (it goes to the log and to `oomwatch check`); a
//! configuration it accepts, written back as TOML, parses to the same value.
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
    let written = toml::to_string(&config).expect("an accepted configuration serializes");
    match Config::parse(&written, "rewritten") {
        Ok(again) => assert_eq!(again, config, "{written}"),
        Err(e) => panic!("the rewritten configuration does not parse: {e}\n{written}"),
    }
});
