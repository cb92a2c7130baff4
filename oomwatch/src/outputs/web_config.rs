//! Optional TLS and basic auth for /metrics, from a web config file in the
//! format Prometheus' own exporters use (exporter-toolkit):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/oomwatch/tls.crt
//!   key_file: /etc/oomwatch/tls.key
//!   client_ca_file: /etc/oomwatch/ca.crt      # optional: require client certificates
//! basic_auth_users:
//!   prometheus: $2y$10$...                      # bcrypt hash
//! ```
//!
//! `/healthz` stays open (it says only "ok"), for liveness probes.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca_file: Option<PathBuf>,
    /// Accepted for compatibility; client certificates are required exactly
    /// when client_ca_file is set.
    client_auth_type: Option<String>,
    min_version: Option<String>,
}

pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    /// Credentials that passed bcrypt once: bcrypt is slow on purpose, and
    /// Prometheus sends the same ones every scrape.
    verified: Mutex<HashSet<String>>,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let file = path.display().to_string();
        let invalid = |reason: String| WebConfigError::Invalid { file: file.clone(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let raw: Raw = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string().lines().next().unwrap_or_default().to_owned()))?;
        for (user, hash) in &raw.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(invalid(format!("basic_auth_users.{user}: not a bcrypt hash (expected $2a$/$2b$/$2y$...)")));
            }
        }
        let tls = match raw.tls_server_config {
            Some(t) => Some(Arc::new(tls_config(&t).map_err(invalid)?)),
            None => None,
        };
        Ok(Self { tls, users: raw.basic_auth_users, verified: Mutex::default() })
    }

    pub fn auth_required(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization` header value.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
        if self.verified.lock().unwrap_or_else(|e| e.into_inner()).contains(encoded) {
            return true;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Ok(decoded) = String::from_utf8(decoded) else { return false };
        let Some((user, password)) = decoded.split_once(':') else { return false };
        let ok = self.users.get(user).is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false));
        if ok {
            let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < 64 {
                v.insert(encoded.to_owned());
            }
        }
        ok
    }
}

fn tls_config(t: &RawTls) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
        .map_err(|e| format!("tls_server_config.cert_file: {}: {e}", t.cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert_file: {}: {e}", t.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("tls_server_config.cert_file: {}: no certificate in it", t.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key_file).map_err(|e| format!("tls_server_config.key_file: {}: {e}", t.key_file.display()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(v) => return Err(format!("tls_server_config.min_version: {v:?} is not TLS12 or TLS13")),
    };
    let _ = &t.client_auth_type;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match &t.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("tls_server_config.client_ca_file: {}: {e}", ca.display()))? {
                let cert = cert.map_err(|e| format!("tls_server_config.client_ca_file: {}: {e}", ca.display()))?;
                roots.add(cert).map_err(|e| format!("tls_server_config.client_ca_file: {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: certificate and key do not match or are unusable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("oomwatch-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let p = write("auth.yml", &format!("basic_auth_users:\n  prom: '{hash}'\n"));
        let c = WebConfig::load(&p).unwrap();
        assert!(c.tls.is_none() && c.auth_required());
        let good = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("prom:s3cret"));
        let bad = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("prom:nope"));
        assert!(c.authorized(Some(&good)));
        assert!(c.authorized(Some(&good)), "cached");
        assert!(!c.authorized(Some(&bad)));
        assert!(!c.authorized(None));
        assert!(!c.authorized(Some("Bearer x")));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let p = write("bad1.yml", "basic_auth_users:\n  prom: plaintext\n");
        let e = WebConfig::load(&p).err().unwrap().to_string();
        assert!(e.contains("bad1.yml") && e.contains("basic_auth_users.prom"), "{e}");
        let p = write("bad2.yml", "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n");
        let e = WebConfig::load(&p).err().unwrap().to_string();
        assert!(e.contains("tls_server_config.cert_file") && e.contains("/nonexistent.crt"), "{e}");
        let p = write("bad3.yml", "tls_config: {}\n");
        let e = WebConfig::load(&p).err().unwrap().to_string();
        assert!(e.contains("unknown field") && e.contains("tls_config"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }
}
