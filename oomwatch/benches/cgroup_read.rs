//! What the sampler pays per cgroup to read the kernel's memory files, on
//! this machine's real cgroupfs (release build). Read-only: it reads one
//! memory cgroup directory, by default this process's own, or the one
//! given with `--dir` (`cargo xtask bench` passes an `oomwatch-test-*`
//! cgroup with a small process in it). Prints one JSON object on stdout:
//!
//!   cargo bench -p oomwatch --bench cgroup_read -- [--dir DIR] [--iters N]
//!       [--parent DIR --prefix NAME]
//!
//! The per-cgroup figure follows the sampler's schedule (cgroup/watch.rs,
//! `SamplerConfig::default()`): every tick one `CgroupPoller::usage`, plus
//! `CgroupPoller::events` for v1 cgroups with a limit (failcnt polling), and
//! one `read_memory` every `full_every` (30 s). Budget in the readers docs:
//! 1,000 cgroups a second within 0.5% of a core, 5 µs a cgroup.
//!
//! With `--parent DIR --prefix NAME` it also reads every `NAME*` cgroup
//! under DIR in turn, as the sampler does each tick: each cgroup's kernel
//! state is cold again by its next read, which costs more than the hot
//! loop on one file. The per-cgroup figure then comes from that rotation.
//! The same cgroups are then read by the usage walk (a BPF cgroup
//! iterator, `kernel::usage_walk`), as the daemon reads them where the
//! kernel has one: the cost of one walk, per cgroup it reads, and how many
//! of its values differ from the files'.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use oomwatch::{
    kernel::loader::{self, LoadOptions},
    readers::{CgroupPoller, CgroupVersion, detect, own_memory_cgroup, read_events, read_memory, read_usage},
    sources::sampler::SamplerConfig,
};

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters: u32 = arg(&args, "--iters")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
        .max(1);
    let layout = detect(Path::new("/proc")).expect("detect the cgroup layout");
    let dir = match arg(&args, "--dir") {
        Some(d) => PathBuf::from(d),
        None => {
            let proc_cgroup =
                std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
            let path =
                own_memory_cgroup(&proc_cgroup, &layout).expect("memory line in /proc/self/cgroup");
            layout.memory_dir(&path).expect("own memory cgroup visible")
        }
    };
    let v = layout.memory_version;
    let time = |f: &dyn Fn()| {
        f();
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
    };
    let usage = time(&|| {
        let _ = std::hint::black_box(read_usage(&dir, v));
    });
    let events = time(&|| {
        let _ = std::hint::black_box(read_events(&dir, v));
    });
    let memory = time(&|| {
        let _ = std::hint::black_box(read_memory(&dir, v));
    });
    let poller = CgroupPoller::open(&dir, v)
        .expect("open the cgroup files")
        .expect("the cgroup exists");
    let poll_usage = time(&|| {
        let _ = std::hint::black_box(poller.usage());
    });
    let poll_events = time(&|| {
        let _ = std::hint::black_box(poller.events());
    });

    // The sampler's real pattern: each cgroup once per tick, in turn, so the
    // kernel structures of one cgroup are cold again by its next read.
    let rotation = arg(&args, "--parent").map(|parent| {
        rotation(
            Path::new(parent),
            arg(&args, "--prefix").unwrap_or(""),
            v,
            &layout.memory_root,
        )
    });

    let cfg = SamplerConfig::default();
    let ticks_per_full = cfg.full_every.as_secs_f64() / cfg.interval.as_secs_f64();
    let v1 = v == CgroupVersion::V1;
    // Per-cgroup cost on the sampler's schedule, from the rotation when one
    // was measured (closer to the daemon), else from the hot loop.
    let (r_usage, r_events, r_memory) = match &rotation {
        Some(r) => (r.usage, r.events, r.memory),
        None => (poll_usage, poll_events, memory),
    };
    let unlimited = r_usage + r_memory / ticks_per_full;
    let limited = unlimited + if v1 { r_events } else { 0.0 };
    let out = serde_json::json!({
        "bench": "cgroup_read",
        "dir": dir.display().to_string(),
        "version": format!("{v:?}"),
        "iters": iters,
        "us_per_call": {
            "read_usage": usage,
            "read_events": events,
            "read_memory": memory,
            "poller_usage": poll_usage,
            "poller_events": poll_events,
        },
        "sampler": {
            "interval_s": cfg.interval.as_secs_f64(),
            "full_every_s": cfg.full_every.as_secs_f64(),
            "us_per_cgroup_tick_unlimited": unlimited,
            "us_per_cgroup_tick_limited": limited,
            "us_per_cgroup_tick_hot": r_usage + r_memory,
            "from": if rotation.is_some() { "rotation" } else { "hot loop" },
        },
        "rotation": rotation.as_ref().map(|r| serde_json::json!({
            "cgroups": r.cgroups,
            "rounds": r.rounds,
            "us_per_call": {"poller_usage": r.usage, "poller_events": r.events, "read_memory": r.memory},
            "walk": r.walk.as_ref().map(|w| match w {
                Ok(w) => serde_json::json!({
                    "us_per_walk": w.us_per_walk,
                    "us_per_cgroup": w.us_per_walk / r.cgroups.max(1) as f64,
                    "cgroups_read": w.read,
                    "differ_from_files": w.differ,
                }),
                Err(e) => serde_json::json!({ "error": e }),
            }),
        })),
    });
    println!("{out}");
}

struct Rotation {
    cgroups: usize,
    rounds: u32,
    usage: f64,
    events: f64,
    memory: f64,
    /// `None` without privileges to load programs.
    walk: Option<Result<WalkCost, String>>,
}

struct WalkCost {
    us_per_walk: f64,
    /// Cgroups of the rotation the walk gave a value for.
    read: usize,
    /// Values that differ from the cgroup's file read right after.
    differ: usize,
}

/// The rotation's cgroups read by the usage walk, as the daemon does.
fn walk_cost(dirs: &[PathBuf], pollers: &[CgroupPoller], root: &Path, rounds: u32) -> Result<WalkCost, String> {
    use std::os::unix::fs::MetadataExt as _;
    let opts = LoadOptions {
        usage_walk_root: Some(root.to_path_buf()),
        usage_walk_cgroups: dirs.len() as u32 + 1,
        ..LoadOptions::default()
    };
    let mut probes = loader::load(&opts).map_err(|e| e.to_string())?;
    let mut walk = probes
        .take_usage_walk()
        .ok_or("probe cgroup_usage_walk was skipped (oomwatch check says why)")??;
    let slots: Vec<Option<u32>> = dirs
        .iter()
        .map(|d| walk.track(std::fs::metadata(d).map(|m| m.ino()).unwrap_or(0)))
        .collect();
    walk.run().map_err(|e| e.to_string())?;
    let t = Instant::now();
    for _ in 0..rounds {
        walk.run().map_err(|e| e.to_string())?;
    }
    let us_per_walk = t.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let walked: Vec<Option<u64>> = slots.iter().map(|s| s.and_then(|s| walk.usage_bytes(s))).collect();
    let differ = walked
        .iter()
        .zip(pollers)
        .filter(|(w, p)| w.is_some() && **w != p.usage().ok().flatten())
        .count();
    Ok(WalkCost { us_per_walk, read: walked.iter().flatten().count(), differ })
}

/// Reads every memory cgroup directory under `parent` whose name starts with
/// `prefix`, one after the other, as the sampler does each tick.
fn rotation(parent: &Path, prefix: &str, v: CgroupVersion, memory_root: &Path) -> Rotation {
    raise_nofile_limit();
    let dirs: Vec<PathBuf> = std::fs::read_dir(parent)
        .expect("read --parent")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix) && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    assert!(
        !dirs.is_empty(),
        "no cgroup named {prefix}* under {}",
        parent.display()
    );
    let dirs: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| matches!(CgroupPoller::open(d, v), Ok(Some(_))))
        .collect();
    let pollers: Vec<CgroupPoller> = dirs
        .iter()
        .filter_map(|d| CgroupPoller::open(d, v).ok().flatten())
        .collect();
    let rounds = 20u32;
    let per_call = |calls: usize, f: &dyn Fn()| {
        f();
        let t = Instant::now();
        for _ in 0..rounds {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / (f64::from(rounds) * calls as f64)
    };
    let usage = per_call(pollers.len(), &|| {
        for p in &pollers {
            let _ = std::hint::black_box(p.usage());
        }
    });
    let events = per_call(pollers.len(), &|| {
        for p in &pollers {
            let _ = std::hint::black_box(p.events());
        }
    });
    let memory = per_call(dirs.len(), &|| {
        for d in &dirs {
            let _ = std::hint::black_box(read_memory(d, v));
        }
    });
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let walk = root.then(|| walk_cost(&dirs, &pollers, memory_root, rounds));
    Rotation {
        cgroups: pollers.len(),
        rounds,
        usage,
        events,
        memory,
        walk,
    }
}

/// As the daemon does: up to 3 fds per cgroup need more than 1024.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
