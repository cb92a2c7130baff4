//! Durations in the config file are strings people read: "150ms", "2s", "5m".

use std::time::Duration;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}' is not a duration like \"2s\" or \"150ms\": {e}"))
}

pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d).map_err(|_| D::Error::custom("expected a duration string like \"2s\" or \"150ms\""))?;
        super::parse_duration(&s).map_err(D::Error::custom)
    }
}
