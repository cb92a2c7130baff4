//! Events into the systemd journal, one entry per event, over journald's
//! native protocol (systemd's docs/JOURNAL_NATIVE_PROTOCOL.md): a datagram
//! to `/run/systemd/journal/socket`, or, when the entry is too large for a
//! datagram, an empty datagram carrying a sealed memfd with the entry
//! (SCM_RIGHTS), as `sd_journal_sendv` does.
//!
//! Written here rather than taken from a crate: the encoder is 40 lines, it
//! is fuzzed against a decoder that follows journald's own parser
//! (`tests/fuzz/fuzz_targets/journald_entry.rs`), it sanitizes field names
//! instead of refusing the entry, it reuses one socket, and it needs nothing
//! but libc, and its socket path is configurable (the tests use a private
//! journald). (The `libsystemd` crate sends to the fixed path, opens a
//! socket per entry and silently leaves out fields with invalid names;
//! `tracing-journald` and `systemd-journal-logger` log the program's own
//! messages, not arbitrary fields.)
//!
//! Fields of every entry:
//!
//! | field | value |
//! |---|---|
//! | `MESSAGE` | the line `oomwatch tail` prints |
//! | `MESSAGE_ID` | one per kind: [`MESSAGE_IDS`] |
//! | `PRIORITY` | [`Level::syslog_priority`]: 2 host-wide kill or critical alert firing, 3 kill at a cgroup limit or unobserved kills, 4 warning alert firing or lagged, 5 stall, pressure, alert pending or resolved, 6 the rest |
//! | `SYSLOG_IDENTIFIER` | `oomwatch` |
//! | `OOMWATCH_<PATH>` | every scalar of the event (strings, numbers, booleans), nested objects flattened with `_`, uppercased: `OOMWATCH_KIND`, `OOMWATCH_CGROUP`, `OOMWATCH_SEQ`, `OOMWATCH_VICTIM_PID`, `OOMWATCH_TRIGGER_COMM`, `OOMWATCH_WORKLOAD_POD_UID`, `OOMWATCH_OOM_CONTROL_GFP_MASK`, ...; arrays and `history` are left out |
//! | `OOMWATCH_JSON` | the whole event, as `oomwatch tail --json` prints it |
//! | `OOMWATCH_RECORD_UID` | [`Record::uid`]: the same event delivered twice has the same uid |
//!
//! Names are made valid journal field names (A-Z, 0-9, `_`; at most 64
//! characters): other characters become `_`, longer names are cut, and a
//! name already taken is not sent again (the JSON field has it all).

use std::{
    collections::HashSet,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, net::UnixDatagram},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use super::delivery::{Level, Outcome, Record};

pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_IDENTIFIER: &str = "oomwatch";

/// `MESSAGE_ID` by event kind: `journalctl MESSAGE_ID=...` finds every kill
/// (or alert, ...) without parsing text. Generated once; never change them.
pub const MESSAGE_IDS: &[(&str, &str)] = &[
    ("oom_kill", "5e47ed6aa7fc49d3af8ee46489ec5517"),
    ("victim_exit", "57d5da9673264aadab0745a61eee528f"),
    ("kill_explained", "ab53a26e1854421fa1ee2c385bc634c3"),
    ("reclaim_stall", "18b833b38ee94e9ab13d32eb0a746e85"),
    ("pressure", "babda8b233c544339687db9c4948222d"),
    ("alert", "de26bf53a1ba48e2ac02b669f5fe0528"),
    ("unobserved_kills", "41ceeecd46824ad1a260ec5b699c36e6"),
    ("incident", "c26358325cb04b259822317024f8ecf0"),
    ("throttled", "ed63ab52e2b1495690fd2422bb00b00a"),
    ("lagged", "0c6ea8b659004219acd5a8a1db5f8352"),
];
/// For kinds newer than this table.
pub const OTHER_MESSAGE_ID: &str = "d23ce74e730e41a88d305963c18cf967";

/// journald ignores a whole entry with more than 1024 fields
/// (ENTRY_FIELD_COUNT_MAX), counting the ones it adds itself (_PID, _UID,
/// _COMM, ... about 30): the flattened event gets at most this many.
pub const MAX_EVENT_FIELDS: usize = 512;
/// Field names longer than this are invalid (systemd's journal_field_valid).
pub const MAX_FIELD_NAME: usize = 64;
/// journald drops entries larger than ENTRY_SIZE_MAX (770 MiB) and values
/// larger than DATA_SIZE_MAX (768 MiB); an event this size is refused here.
pub const MAX_ENTRY_BYTES: usize = 768 << 20;
const NESTING_LIMIT: usize = 16;

pub fn message_id(kind: &str) -> &'static str {
    MESSAGE_IDS.iter().find(|(k, _)| *k == kind).map_or(OTHER_MESSAGE_ID, |(_, id)| id)
}

/// systemd's `journal_field_valid` for fields a client may send: 1 to 64
/// characters of A-Z, 0-9 and `_`, not starting with `_` or a digit.
pub fn valid_field_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FIELD_NAME
        && name[0] != b'_'
        && !name[0].is_ascii_digit()
        && name.iter().all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

/// The fields of the entry for `record`, in the order they are sent.
pub fn entry_fields(record: &Record) -> Vec<(String, String)> {
    let mut fields = vec![
        ("MESSAGE".to_owned(), record.message.clone()),
        ("MESSAGE_ID".to_owned(), message_id(record.kind()).to_owned()),
        ("PRIORITY".to_owned(), Level::of(&record.json).syslog_priority().to_string()),
        ("SYSLOG_IDENTIFIER".to_owned(), SYSLOG_IDENTIFIER.to_owned()),
        ("OOMWATCH_JSON".to_owned(), record.line.clone()),
        ("OOMWATCH_RECORD_UID".to_owned(), record.uid.clone()),
    ];
    let mut taken: HashSet<String> = fields.iter().map(|(name, _)| name.clone()).collect();
    if let Value::Object(map) = &record.json {
        let mut flat = Vec::new();
        for (key, value) in map {
            if key != "history" {
                flatten("OOMWATCH", key, value, 0, &mut flat);
            }
        }
        for (name, value) in flat {
            if fields.len() >= MAX_EVENT_FIELDS + 6 {
                break;
            }
            if taken.insert(name.clone()) {
                fields.push((name, value));
            }
        }
    }
    fields
}

fn flatten(prefix: &str, key: &str, value: &Value, depth: usize, out: &mut Vec<(String, String)>) {
    if out.len() >= MAX_EVENT_FIELDS * 2 {
        return;
    }
    let name = field_name(prefix, key);
    match value {
        Value::String(s) => out.push((name, s.clone())),
        Value::Number(n) => out.push((name, n.to_string())),
        Value::Bool(b) => out.push((name, b.to_string())),
        Value::Object(map) if depth < NESTING_LIMIT => {
            for (k, v) in map {
                flatten(&name, k, v, depth + 1, out);
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => {}
    }
}

/// `PREFIX_KEY` made a valid field name: ASCII letters uppercased, anything
/// else but digits and `_` turned into `_`, cut at 64 characters. The
/// prefix is valid and does not start with `_` or a digit, so neither does
/// the result.
pub fn field_name(prefix: &str, key: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + 1 + key.len());
    name.push_str(prefix);
    name.push('_');
    for c in key.chars() {
        if name.len() >= MAX_FIELD_NAME {
            break;
        }
        name.push(match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' | '_' => c,
            _ => '_',
        });
    }
    name.truncate(MAX_FIELD_NAME);
    name
}

/// Appends one field: `NAME=value\n`, or, when the value holds a newline,
/// `NAME\n`, its length as 64-bit little endian, the value and `\n`.
pub fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    if memchr::memchr(b'\n', value).is_some() {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The entry for `record`, as sent in a datagram or a memfd.
pub fn encode(record: &Record) -> Vec<u8> {
    let fields = entry_fields(record);
    let size = fields.iter().map(|(n, v)| n.len() + v.len() + 10).sum();
    let mut out = Vec::with_capacity(size);
    for (name, value) in &fields {
        push_field(&mut out, name, value.as_bytes());
    }
    out
}

#[derive(Clone, Debug)]
pub struct JournaldConfig {
    /// journald's native socket.
    pub socket: PathBuf,
    /// How long one send may wait for journald to make room (it reads its
    /// socket in turn with its other work; a burst fills the socket's
    /// queue, 10 datagrams by default). Past it, the entry is retried.
    pub timeout: Duration,
}

impl Default for JournaldConfig {
    fn default() -> Self {
        Self { socket: PathBuf::from(DEFAULT_SOCKET), timeout: Duration::from_secs(1) }
    }
}

/// How an entry reached journald.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Datagram,
    /// Too large for a datagram on this socket: a sealed memfd.
    Memfd,
}

#[derive(Debug, thiserror::Error)]
pub enum JournaldError {
    #[error("journald socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("journald socket {path}: path longer than a unix socket address allows")]
    PathTooLong { path: PathBuf },
    #[error("journald at {path}: entry of {size} bytes is larger than journald accepts")]
    TooLarge { path: PathBuf, size: usize },
    #[error("journald at {path} took no entry within {timeout:?} (busy or stopped)")]
    Busy { path: PathBuf, timeout: Duration },
    #[error("journald at {path}: memfd for an entry of {size} bytes: {source}")]
    Memfd { path: PathBuf, size: usize, source: io::Error },
}

impl JournaldError {
    /// Whether sending again later can succeed (journald down or busy), as
    /// opposed to an entry journald will never take.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::TooLarge { .. })
    }
}

/// A sender to journald. Sends block for at most [`JournaldConfig::timeout`]
/// each: call it from a blocking thread (`spawn_blocking`), not from an
/// async task.
pub struct Journald {
    socket: UnixDatagram,
    path: PathBuf,
    address: libc::sockaddr_un,
    timeout: Duration,
}

impl Journald {
    /// Works whether journald runs yet or not: the socket is not connected,
    /// each entry is addressed to the path (journald may restart).
    pub fn new(config: &JournaldConfig) -> Result<Self, JournaldError> {
        let path = config.socket.clone();
        let socket_error = |source| JournaldError::Socket { path: path.clone(), source };
        let socket = UnixDatagram::unbound().map_err(socket_error)?;
        // A zero timeout would mean "block forever" to the kernel.
        let timeout = config.timeout.max(Duration::from_millis(1));
        socket.set_write_timeout(Some(timeout)).map_err(socket_error)?;
        let address = unix_address(&path).ok_or_else(|| JournaldError::PathTooLong { path: path.clone() })?;
        Ok(Self { socket, path, address, timeout })
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Sends one entry (see [`encode`]).
    pub fn send_entry(&self, entry: &[u8]) -> Result<Transport, JournaldError> {
        if entry.len() > MAX_ENTRY_BYTES {
            return Err(JournaldError::TooLarge { path: self.path.clone(), size: entry.len() });
        }
        match self.socket.send_to(entry, &self.path) {
            Ok(_) => Ok(Transport::Datagram),
            // Larger than this socket's send buffer allows in one datagram.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)) => {
                self.send_memfd(entry).map(|()| Transport::Memfd)
            }
            Err(source) => Err(self.send_error(source)),
        }
    }

    fn send_error(&self, source: io::Error) -> JournaldError {
        if source.kind() == io::ErrorKind::WouldBlock {
            return JournaldError::Busy { path: self.path.clone(), timeout: self.timeout };
        }
        JournaldError::Socket { path: self.path.clone(), source }
    }

    pub fn send(&self, record: &Record) -> Result<Transport, JournaldError> {
        self.send_entry(&encode(record))
    }

    /// One outcome per record, in order. After the first failure journald
    /// is down or stuck: the rest are not tried (each would wait the
    /// timeout again) and come back as `Retry` too.
    pub fn send_batch(&self, records: &[Record]) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(records.len());
        let mut failed: Option<String> = None;
        for record in records {
            if let Some(reason) = &failed {
                outcomes.push(Outcome::retry(reason.clone()));
                continue;
            }
            outcomes.push(match self.send(record) {
                Ok(_) => Outcome::Delivered,
                Err(e) if e.is_retryable() => {
                    let reason = e.to_string();
                    failed = Some(reason.clone());
                    Outcome::retry(reason)
                }
                Err(e) => Outcome::Rejected { reason: e.to_string() },
            });
        }
        outcomes
    }

    fn send_memfd(&self, entry: &[u8]) -> Result<(), JournaldError> {
        let memfd_error = |source| JournaldError::Memfd { path: self.path.clone(), size: entry.len(), source };
        let memfd = sealed_memfd(entry).map_err(memfd_error)?;
        // An empty datagram whose only content is the memfd: what journald
        // expects (payload and descriptor together are refused).
        let mut control = [0u8; 64];
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
        debug_assert!(space <= control.len());
        // SAFETY: msghdr is plain data; every pointer set below outlives the
        // sendmsg call, and the control buffer is large enough for one
        // SCM_RIGHTS header with one descriptor (checked above).
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = (&raw const self.address).cast_mut().cast();
            msg.msg_namelen = size_of::<libc::sockaddr_un>() as libc::socklen_t;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), memfd.as_raw_fd());
            if libc::sendmsg(self.socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
                return Err(self.send_error(io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

/// A memfd holding `data`, sealed against any change: journald maps a
/// sealed memfd instead of copying it, and nobody can alter it after.
fn sealed_memfd(data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated literal.
    let fd = unsafe { libc::memfd_create(c"oomwatch-journal-entry".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

fn unix_address(path: &Path) -> Option<libc::sockaddr_un> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays zero: the terminator.
    if bytes.is_empty() || bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return None;
    }
    for (dst, &src) in address.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Some(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        outputs::delivery::HostIdentity,
        wire::{Event, EventBody, OomKill, Trigger, Victim, Workload},
    };

    fn host() -> HostIdentity {
        HostIdentity { hostname: "h".into(), boot_id: "0".repeat(32), machine_id: String::new() }
    }

    fn kill() -> Event {
        let mut k = OomKill::of_pid(4242);
        k.victim = Victim { pid: 4242, comm: Some("evil\nname\u{1b}[31m".into()), uid: Some(1000), ..Default::default() };
        k.trigger = Trigger { pid: 1, tid: 2, comm: "trig".into(), cgroup: Some("/a".into()) };
        k.limit_bytes = Some(64 << 20);
        k.workload = Workload { pod_uid: Some("p-1".into()), ..Default::default() };
        k.unavailable = vec!["oom_control".into()];
        Event { body: EventBody::OomKill(Box::new(k)), time: "2026-11-22T05:40:01.123456Z".into(), cgroup: "/a".into(), ktime_ns: Some(5), seq: 3 }
    }

    fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_kill_has_the_documented_fields() {
        let r = Record::from_event(&kill(), &host());
        let f = entry_fields(&r);
        assert_eq!(get(&f, "MESSAGE"), Some(r.message.as_str()));
        assert_eq!(get(&f, "MESSAGE_ID"), Some("5e47ed6aa7fc49d3af8ee46489ec5517"));
        assert_eq!(get(&f, "PRIORITY"), Some("3"), "a kill at a cgroup limit is an error");
        assert_eq!(get(&f, "SYSLOG_IDENTIFIER"), Some("oomwatch"));
        assert_eq!(get(&f, "OOMWATCH_KIND"), Some("oom_kill"));
        assert_eq!(get(&f, "OOMWATCH_VICTIM_PID"), Some("4242"));
        assert_eq!(get(&f, "OOMWATCH_VICTIM_COMM"), Some("evil\nname\u{1b}[31m"));
        assert_eq!(get(&f, "OOMWATCH_TRIGGER_COMM"), Some("trig"));
        assert_eq!(get(&f, "OOMWATCH_TRIGGER_CGROUP"), Some("/a"));
        assert_eq!(get(&f, "OOMWATCH_LIMIT_BYTES"), Some("67108864"));
        assert_eq!(get(&f, "OOMWATCH_CONSTRAINT"), Some("memcg"));
        assert_eq!(get(&f, "OOMWATCH_WORKLOAD_POD_UID"), Some("p-1"));
        assert_eq!(get(&f, "OOMWATCH_SEQ"), Some("3"));
        assert_eq!(get(&f, "OOMWATCH_JSON"), Some(r.line.as_str()));
        assert_eq!(get(&f, "OOMWATCH_RECORD_UID"), Some(r.uid.as_str()));
        assert!(get(&f, "OOMWATCH_UNAVAILABLE").is_none(), "arrays are not flattened");
        assert!(f.iter().all(|(n, _)| valid_field_name(n.as_bytes())), "{f:?}");
    }

    #[test]
    fn values_with_newlines_use_the_length_prefixed_form() {
        let mut out = Vec::new();
        push_field(&mut out, "A", b"x=y");
        push_field(&mut out, "B", b"1\n2");
        assert_eq!(out, b"A=x=y\nB\n\x03\0\0\0\0\0\0\x001\n2\n");
    }

    #[test]
    fn names_are_sanitized_cut_and_never_repeated() {
        assert_eq!(field_name("OOMWATCH", "victim"), "OOMWATCH_VICTIM");
        assert_eq!(field_name("OOMWATCH", "a-b.c d\u{e9}"), "OOMWATCH_A_B_C_D_");
        let long = field_name("OOMWATCH", &"k".repeat(100));
        assert_eq!(long.len(), MAX_FIELD_NAME);
        assert!(valid_field_name(long.as_bytes()));
        assert!(!valid_field_name(b"_X") && !valid_field_name(b"1X") && !valid_field_name(b"") && !valid_field_name(b"a"));

        let json = serde_json::json!({"kind": "x", "json": "clash", "a.b": 1, "a_b": 2, "nested": {"deep": {"er": true}}, "n": null});
        let r = Record::from_json(json, &host()).unwrap();
        let f = entry_fields(&r);
        assert_eq!(f.iter().filter(|(n, _)| n == "OOMWATCH_JSON").count(), 1);
        assert_eq!(get(&f, "OOMWATCH_JSON"), Some(r.line.as_str()), "the event's own field cannot replace it");
        assert_eq!(f.iter().filter(|(n, _)| n == "OOMWATCH_A_B").count(), 1);
        assert_eq!(get(&f, "OOMWATCH_NESTED_DEEP_ER"), Some("true"));
        assert!(get(&f, "OOMWATCH_N").is_none());
        assert_eq!(get(&f, "MESSAGE_ID"), Some(OTHER_MESSAGE_ID));
    }

    #[test]
    fn field_count_is_bounded() {
        let map: serde_json::Map<String, Value> = (0..5000).map(|i| (format!("k{i}"), Value::from(i))).collect();
        let r = Record::from_json(Value::Object(map), &host()).unwrap();
        assert!(entry_fields(&r).len() <= MAX_EVENT_FIELDS + 6);
    }

    #[test]
    fn message_ids_are_distinct_128_bit_ids_for_every_kind() {
        let mut seen = HashSet::new();
        // A kill's first word is live only: it never reaches the journal.
        let shipped = crate::wire::EventKind::ALL.iter().filter(|k| k.is_kept());
        for kind in shipped.map(|k| k.as_str()) {
            let id = message_id(kind);
            assert_ne!(id, OTHER_MESSAGE_ID, "{kind}");
            assert!(seen.insert(id));
        }
        for (_, id) in MESSAGE_IDS.iter().chain([&("", OTHER_MESSAGE_ID)]) {
            assert!(id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        }
    }

    #[test]
    fn no_journald_is_a_retry_naming_the_socket() {
        let dir = std::env::temp_dir().join(format!("oomwatch-journald-unit-{}", std::process::id()));
        let j = Journald::new(&JournaldConfig { socket: dir.join("socket"), timeout: Duration::from_millis(50) }).unwrap();
        let r = Record::from_event(&kill(), &host());
        let out = j.send_batch(&[r.clone(), r]);
        assert_eq!(out.len(), 2);
        for o in &out {
            match o {
                Outcome::Retry { reason, .. } => assert!(reason.contains(&dir.display().to_string()), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        let long = PathBuf::from(format!("/{}", "x".repeat(200)));
        assert!(matches!(Journald::new(&JournaldConfig { socket: long, ..Default::default() }), Err(JournaldError::PathTooLong { .. })));
    }

    /// A journald that stopped reading: the batch waits one timeout, not one
    /// per entry, and everything from the stuck entry on is retried.
    #[test]
    fn a_stuck_journald_costs_one_timeout_per_batch() {
        let dir = std::env::temp_dir().join(format!("oomwatch-journald-stuck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let _server = UnixDatagram::bind(&path).unwrap();
        let timeout = Duration::from_millis(100);
        let j = Journald::new(&JournaldConfig { socket: path.clone(), timeout }).unwrap();
        let r = Record::from_event(&kill(), &host());
        let batch = vec![r; 2000];
        let started = std::time::Instant::now();
        let out = j.send_batch(&batch);
        let took = started.elapsed();
        let first_retry = out.iter().position(|o| !o.is_delivered()).expect("the socket's queue fills up");
        assert!(out[..first_retry].iter().all(Outcome::is_delivered));
        match &out[first_retry] {
            Outcome::Retry { reason, .. } => assert!(reason.contains("took no entry within 100ms") && reason.contains(&path.display().to_string()), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(out[first_retry..].iter().all(|o| matches!(o, Outcome::Retry { .. })));
        assert!(took < timeout * 5, "one timeout, not one per entry: {took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A local datagram socket stands in for journald's: what arrives is
    /// exactly the entry, and an entry larger than the send buffer arrives
    /// as a sealed memfd with an empty payload.
    #[test]
    fn large_entries_go_through_a_sealed_memfd() {
        use std::os::fd::FromRawFd as _;
        let dir = std::env::temp_dir().join(format!("oomwatch-journald-memfd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let j = Journald::new(&JournaldConfig { socket: path.clone(), timeout: Duration::from_secs(1) }).unwrap();

        let small = b"MESSAGE=hi\n".to_vec();
        assert_eq!(j.send_entry(&small).unwrap(), Transport::Datagram);
        let mut buf = vec![0u8; 4096];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &small[..]);

        let mut big = Vec::new();
        push_field(&mut big, "MESSAGE", "y\n".repeat(300 << 10).as_bytes());
        assert_eq!(j.send_entry(&big).unwrap(), Transport::Memfd);
        // SAFETY: plain recvmsg into local buffers.
        let fd = unsafe {
            let mut payload = [0u8; 16];
            let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
            let mut control = [0u8; 64];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            let n = libc::recvmsg(server.as_raw_fd(), &mut msg, 0);
            assert_eq!(n, 0, "the payload is empty");
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null());
            assert_eq!(((*cmsg).cmsg_level, (*cmsg).cmsg_type), (libc::SOL_SOCKET, libc::SCM_RIGHTS));
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()))
        };
        // SAFETY: fcntl on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let all = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & all, all, "fully sealed");
        let mut got = Vec::new();
        use std::io::Read as _;
        let mut file = std::fs::File::from(fd);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut got).unwrap();
        assert!(got == big, "memfd holds the entry");
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
