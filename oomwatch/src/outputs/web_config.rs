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
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    hash::BuildHasher as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::oneshot;

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

/// How long a request may wait for its turn at bcrypt before it is answered
/// 503. Long enough that the two replicas of an HA Prometheus pair, which
/// scrape at the same instant, both get through; well under Prometheus'
/// default 10 s scrape timeout, so a scrape that has to give up does so
/// with a clear status instead of a timeout.
pub const AUTH_WAIT: Duration = Duration::from_secs(5);
/// bcrypt checks run one at a time: a flood of wrong passwords can keep at
/// most one core busy, whatever its size.
const BCRYPT_SLOTS: usize = 1;
/// After a failed check the slot stays closed for this many times the
/// check's own duration, so failed checks use at most 1/(1+N) of one core.
/// Correct credentials are checked once and then cached, so only guesses
/// (and a scraper with a wrong password, which the refusal cache absorbs)
/// ever wait for this.
const FAILURE_COOLDOWN_FACTOR: u32 = 3;
/// Distinct wrong credentials remembered, so that a scraper configured with
/// a wrong password costs one bcrypt check, not one per scrape.
const REFUSED_CACHE: usize = 1024;
const VERIFIED_CACHE: usize = 64;

/// A well-formed bcrypt hash of a random password; its cost is replaced by
/// the costliest configured one, so a request naming an unknown user costs
/// as much as a wrong password for a real one (no user enumeration by
/// timing).
const DUMMY_HASH_TAIL: &str = "$VaTjdI7ADx9Fdt619ikcTeGt6ecL7mFy45GtVzN23sYZkyYYRKMt6";

pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: BTreeMap<String, String>,
    dummy_hash: String,
    /// Credentials that passed bcrypt once: bcrypt is slow on purpose, and
    /// Prometheus sends the same ones every scrape.
    verified: Mutex<HashSet<String>>,
    /// Fingerprints (keyed SipHash) of Authorization values that failed:
    /// no plaintext guesses kept, bounded memory.
    refused: Mutex<HashSet<u64>>,
    fingerprint_key: std::collections::hash_map::RandomState,
    gate: AuthGate,
}

/// The answer to one request's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    Denied,
    /// No bcrypt slot within [`AUTH_WAIT`]: answer 503 and let the client retry.
    Busy,
}

/// One bcrypt check at a time overall, and one waiting or running per
/// client address: a flood from one address queues one request, not all of
/// them. Addresses whose last check failed (within [`SUSPECT_FOR`]) queue
/// behind the others, so a scraper with the right password waits for at
/// most the check in progress and its cool-down, however many addresses
/// are guessing.
struct AuthGate {
    slots: Arc<SlotQueue>,
    per_peer: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// When each address last failed a check.
    suspects: Mutex<HashMap<IpAddr, Instant>>,
    failures: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

/// How long a failed check puts its address at the back of the queue.
const SUSPECT_FOR: Duration = Duration::from_secs(600);
const MAX_SUSPECTS: usize = 4096;

impl AuthGate {
    fn new() -> Self {
        Self {
            slots: SlotQueue::new(BCRYPT_SLOTS),
            per_peer: Mutex::default(),
            suspects: Mutex::default(),
            failures: AtomicU64::new(0),
            last_report: Mutex::new(None),
        }
    }

    fn priority(&self, peer: IpAddr) -> Priority {
        match lock(&self.suspects).get(&peer) {
            Some(t) if t.elapsed() < SUSPECT_FOR => Priority::Suspect,
            _ => Priority::Normal,
        }
    }

    fn judge(&self, peer: IpAddr, ok: bool) {
        let mut suspects = lock(&self.suspects);
        if ok {
            suspects.remove(&peer);
        } else {
            if suspects.len() >= MAX_SUSPECTS {
                suspects.retain(|_, t| t.elapsed() < SUSPECT_FOR);
                if suspects.len() >= MAX_SUSPECTS {
                    suspects.clear();
                }
            }
            suspects.insert(peer, Instant::now());
        }
    }

    fn peer_turn(&self, peer: IpAddr) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.per_peer).entry(peer).or_default().clone()
    }

    /// Forgets the address once nobody else holds or waits for its turn.
    fn release_peer(&self, peer: IpAddr, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut map = lock(&self.per_peer);
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&turn) == 2 {
            map.remove(&peer);
        }
    }

    /// Failed checks are summed into one warning a minute at most: an
    /// attack must not turn into a flood of log lines.
    fn note_failure(&self) {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        let mut last = lock(&self.last_report);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            self.failures.store(0, Relaxed);
            log::warn!("basic auth: {n} failed credential check(s) since the last report (wrong user or password on /metrics)");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `user` and `password` of a `Basic` Authorization value (the scheme name
/// is case-insensitive, RFC 7617).
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Refuses what bcrypt would later reject at every request: a bad prefix,
/// cost, length or encoding. Returns the cost.
fn check_bcrypt_hash(hash: &str) -> Result<u32, String> {
    if !hash.is_ascii() {
        return Err("not ASCII".into());
    }
    let parts: bcrypt::HashParts = hash.parse().map_err(|e: bcrypt::BcryptError| e.to_string())?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!("cost {cost} is outside 4..31"));
    }
    // The same hash at the lowest cost decodes salt and digest exactly as a
    // real check would, for a millisecond instead of the real cost.
    let (head, tail) = hash.split_at(hash.len() - 53);
    let cost_field = head.trim_end_matches('$').rsplit_once('$').map_or(head, |(prefix, _)| prefix);
    let cheap = format!("{cost_field}$04${tail}");
    bcrypt::verify("", &cheap).map_err(|e| e.to_string())?;
    Ok(cost)
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let file = path.display().to_string();
        let invalid = |reason: String| WebConfigError::Invalid { file: file.clone(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let raw: Raw = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string().lines().next().unwrap_or_default().to_owned()))?;
        let mut max_cost = 4;
        for (user, hash) in &raw.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(invalid(format!("basic_auth_users.{user}: not a bcrypt hash (expected $2a$/$2b$/$2y$...)")));
            }
            let cost = check_bcrypt_hash(hash).map_err(|e| {
                invalid(format!(
                    "basic_auth_users.{user}: malformed bcrypt hash ({}); make one with `htpasswd -nBC 10 {user}`",
                    e.lines().next().unwrap_or_default()
                ))
            })?;
            max_cost = max_cost.max(cost);
        }
        let tls = match raw.tls_server_config {
            Some(t) => Some(Arc::new(tls_config(&t).map_err(invalid)?)),
            None => None,
        };
        Ok(Self {
            tls,
            users: raw.basic_auth_users,
            dummy_hash: format!("$2b${max_cost:02}{DUMMY_HASH_TAIL}"),
            verified: Mutex::default(),
            refused: Mutex::default(),
            fingerprint_key: std::collections::hash_map::RandomState::new(),
            gate: AuthGate::new(),
        })
    }

    pub fn auth_required(&self) -> bool {
        !self.users.is_empty()
    }

    /// bcrypt of `password` against `user`'s hash, or against the dummy hash
    /// of the same cost when there is no such user.
    fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        bcrypt::verify(password, hash).unwrap_or(false) && known
    }

    fn fingerprint(&self, header: &str) -> u64 {
        self.fingerprint_key.hash_one(header)
    }

    fn cached(&self, header: &str) -> Option<bool> {
        if lock(&self.verified).contains(header) {
            return Some(true);
        }
        lock(&self.refused).contains(&self.fingerprint(header)).then_some(false)
    }

    fn remember(&self, header: &str, ok: bool) {
        if ok {
            let mut v = lock(&self.verified);
            if v.len() < VERIFIED_CACHE {
                v.insert(header.to_owned());
            }
        } else {
            let mut r = lock(&self.refused);
            if r.len() >= REFUSED_CACHE {
                r.clear();
            }
            r.insert(self.fingerprint(header));
        }
    }

    /// Checks an `Authorization` header value on the calling thread, with no
    /// limit on concurrency: for tests and tools. The server uses [`Self::check`].
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(header) = header else { return false };
        if let Some(known) = self.cached(header) {
            return known;
        }
        let Some((user, password)) = basic_credentials(header) else { return false };
        let ok = self.verify(&user, &password);
        self.remember(header, ok);
        ok
    }

    /// Checks an `Authorization` header value from `peer` (an address, or
    /// an IPv6 /64), queueing for bcrypt as [`AuthGate`] describes.
    pub async fn check(self: &Arc<Self>, header: Option<&str>, peer: IpAddr) -> AuthOutcome {
        let outcome = |ok: bool| if ok { AuthOutcome::Allowed } else { AuthOutcome::Denied };
        if self.users.is_empty() {
            return AuthOutcome::Allowed;
        }
        let Some(header) = header else { return AuthOutcome::Denied };
        if let Some(known) = self.cached(header) {
            return outcome(known);
        }
        let Some((user, password)) = basic_credentials(header) else { return AuthOutcome::Denied };
        let deadline = tokio::time::Instant::now() + AUTH_WAIT;
        let turn = self.gate.peer_turn(peer);
        let result = async {
            let Ok(_my_turn) = tokio::time::timeout_at(deadline, turn.lock()).await else { return AuthOutcome::Busy };
            // An identical request may have been decided while this one waited.
            if let Some(known) = self.cached(header) {
                return outcome(known);
            }
            let Ok(Some(slot)) = tokio::time::timeout_at(deadline, self.gate.slots.acquire(self.gate.priority(peer))).await else {
                return AuthOutcome::Busy;
            };
            let me = self.clone();
            let started = Instant::now();
            let ok = tokio::task::spawn_blocking(move || me.verify(&user, &password)).await.unwrap_or(false);
            self.remember(header, ok);
            self.gate.judge(peer, ok);
            if !ok {
                self.gate.note_failure();
                hold_after_failure(slot, started.elapsed());
            }
            outcome(ok)
        }
        .await;
        self.gate.release_peer(peer, turn);
        result
    }
}

/// Keeps the bcrypt slot closed for a while after a failed check.
fn hold_after_failure(slot: Slot, spent: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(spent * FAILURE_COOLDOWN_FACTOR).await;
        drop(slot);
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Priority {
    Normal = 0,
    Suspect = 1,
}

/// A counting semaphore whose waiters are served normal ones first, each
/// class in arrival order.
struct SlotQueue {
    state: Mutex<SlotState>,
}

struct SlotState {
    free: usize,
    waiting: [VecDeque<oneshot::Sender<Slot>>; 2],
}

/// One slot of a [`SlotQueue`]; given back (to the next waiter) on drop.
struct Slot(Option<Arc<SlotQueue>>);

impl SlotQueue {
    fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(SlotState { free: slots, waiting: Default::default() }) })
    }

    /// A slot, once it is this caller's turn (None only if the queue is gone).
    async fn acquire(self: &Arc<Self>, priority: Priority) -> Option<Slot> {
        let rx = {
            let mut state = lock(&self.state);
            if state.free > 0 {
                state.free -= 1;
                return Some(Slot(Some(self.clone())));
            }
            let (tx, rx) = oneshot::channel();
            let queue = &mut state.waiting[priority as usize];
            // Waiters that gave up (timed out) leave a closed sender behind.
            queue.retain(|w| !w.is_closed());
            queue.push_back(tx);
            rx
        };
        rx.await.ok()
    }

    fn release(self: &Arc<Self>) {
        let mut state = lock(&self.state);
        for class in 0..2 {
            while let Some(next) = state.waiting[class].pop_front() {
                match next.send(Slot(Some(self.clone()))) {
                    Ok(()) => return,
                    // That waiter is gone; the slot was never handed over.
                    Err(mut slot) => slot.0 = None,
                }
            }
        }
        state.free += 1;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(queue) = self.0.take() {
            queue.release();
        }
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

    #[test]
    fn malformed_bcrypt_hashes_are_refused_naming_the_user() {
        let good = bcrypt::hash("pw", 4).unwrap();
        let cases = [
            "$2y$10$garbage".to_owned(),
            // Right length, a character outside bcrypt's alphabet.
            format!("{}!", &good[..good.len() - 1]),
            // A cost bcrypt refuses.
            format!("$2b$03{}", &good[6..]),
            "$2q$10$abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQ".to_owned(),
            "$2y$10$ééééééééééééééééééééééééééééééééééééééééééééééééééééé".to_owned(),
        ];
        for (i, hash) in cases.iter().enumerate() {
            let p = write(&format!("malformed{i}.yml"), &format!("basic_auth_users:\n  alice: '{hash}'\n"));
            let e = WebConfig::load(&p).err().unwrap_or_else(|| panic!("{hash} accepted")).to_string();
            assert!(e.contains(&format!("malformed{i}.yml")) && e.contains("basic_auth_users.alice") && e.contains("malformed bcrypt hash"), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let p = write("wellformed.yml", &format!("basic_auth_users:\n  alice: '{good}'\n"));
        assert!(WebConfig::load(&p).is_ok());
    }

    #[test]
    fn unknown_users_cost_a_check_of_the_costliest_hash() {
        let (cheap, dear) = (bcrypt::hash("a", 4).unwrap(), bcrypt::hash("b", 6).unwrap());
        let p = write("costs.yml", &format!("basic_auth_users:\n  a: '{cheap}'\n  b: '{dear}'\n"));
        let c = WebConfig::load(&p).unwrap();
        assert_eq!(check_bcrypt_hash(&c.dummy_hash), Ok(6), "the dummy is well formed, at the highest cost");
        assert!(!c.verify("nobody", ""), "the dummy never matches");
        assert!(!c.verify("nobody", "b"));
        assert!(c.verify("b", "b") && !c.verify("b", "a"));
    }

    #[test]
    fn basic_scheme_is_case_insensitive_and_garbage_is_refused() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(basic_credentials(&format!("basic {}", enc("u:p:q"))), Some(("u".into(), "p:q".into())));
        assert_eq!(basic_credentials(&format!("Basic {}", enc("no-colon"))), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials(&format!("Bearer {}", enc("u:p"))), None);
        assert_eq!(basic_credentials(""), None);
    }

    #[tokio::test]
    async fn slots_go_to_normal_waiters_before_suspects_and_survive_quitters() {
        let q = SlotQueue::new(1);
        let held = q.acquire(Priority::Normal).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiter = |name: &'static str, p: Priority| {
            let (q, order) = (q.clone(), order.clone());
            tokio::spawn(async move {
                let slot = q.acquire(p).await.unwrap();
                order.lock().unwrap().push(name);
                drop(slot);
            })
        };
        let s1 = waiter("suspect", Priority::Suspect);
        tokio::task::yield_now().await;
        // One that gives up while waiting must not swallow the slot.
        let quitter = tokio::time::timeout(Duration::from_millis(1), q.acquire(Priority::Normal)).await;
        assert!(quitter.is_err());
        let n1 = waiter("normal", Priority::Normal);
        tokio::task::yield_now().await;
        drop(held);
        s1.await.unwrap();
        n1.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["normal", "suspect"]);
        assert_eq!(lock(&q.state).free, 1, "every slot came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_check_per_address_at_a_time_and_wrong_passwords_are_remembered() {
        let hash = bcrypt::hash("right", 8).unwrap();
        let p = write("gate.yml", &format!("basic_auth_users:\n  u: '{hash}'\n"));
        let c = Arc::new(WebConfig::load(&p).unwrap());
        let header = |pw: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("u:{pw}")));
        let attacker: IpAddr = "192.0.2.1".parse().unwrap();
        let scraper: IpAddr = "192.0.2.2".parse().unwrap();
        // Eight guesses at once from one address queue one behind the other.
        let guesses: Vec<_> = (0..8)
            .map(|i| {
                let c = c.clone();
                let h = header(&format!("guess{i}"));
                tokio::spawn(async move { c.check(Some(&h), attacker).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t = Instant::now();
        assert_eq!(c.check(Some(&header("right")), scraper).await, AuthOutcome::Allowed);
        let waited = t.elapsed();
        for g in guesses {
            assert_ne!(g.await.unwrap(), AuthOutcome::Allowed);
        }
        // At most the guess being checked (and its cool-down) is ahead of the scraper.
        assert!(waited < AUTH_WAIT / 2, "the scraper waited {waited:?}");
        // Cached both ways now: no bcrypt, no queue.
        let t = Instant::now();
        assert_eq!(c.check(Some(&header("right")), scraper).await, AuthOutcome::Allowed);
        assert_eq!(c.check(Some(&header("guess0")), scraper).await, AuthOutcome::Denied);
        assert!(t.elapsed() < Duration::from_millis(5), "{:?}", t.elapsed());
        assert!(lock(&c.gate.per_peer).is_empty(), "addresses are forgotten when done");
    }
}
