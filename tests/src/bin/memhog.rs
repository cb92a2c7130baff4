//! Memory workloads for tests and scenarios, run inside `oomwatch-test-*`
//! cgroups. Every mode touches each page it allocates so the memory is
//! really charged to the cgroup.
//!
//!   memhog hog MB                     allocate MB at once, then sleep
//!   memhog leak START_MB RATE_MB_S [MAX_MB]   grow steadily (stop at MAX_MB and hold)
//!   memhog cache FILE FILE_MB SECS [ANON_MB]   hold ANON_MB, re-read FILE for SECS
//!   memhog hold MB SECS               allocate MB, sleep SECS, exit 0
//!   memhog shm FILE MB                map FILE (on a tmpfs) shared, grow it to MB, touch it, sleep
//!   memhog sawtooth TROUGH_MB PEAK_MB FILL_S PERIOD_S SECS [DRIFT_MB_S]
//!                                     a garbage-collected heap: fill from the trough to the peak
//!                                     over FILL_S, free back, every PERIOD_S, for SECS (exit 0);
//!                                     DRIFT_MB_S leaks under it (troughs and peaks climb)
//!   memhog step START_MB STEP_MB EVERY_S STEPS   a cache warm-up: STEPS jumps of STEP_MB, then hold
//!   memhog exp START_MB DOUBLING_S    doubling buffers: grow START_MB * 2^(t / DOUBLING_S)

use std::{
    fs::File,
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;

fn touch(mb: usize) -> Vec<u8> {
    let mut v = vec![0u8; mb * MIB];
    for i in (0..v.len()).step_by(PAGE) {
        v[i] = 1;
    }
    v
}

/// One MiB of anonymous memory mapped on its own, so that dropping it
/// gives the pages back to the kernel at once (malloc keeps freed heap
/// memory charged, which would hide the frees of a sawtooth).
struct Mapped(*mut libc::c_void);

impl Mapped {
    fn touched() -> Self {
        // SAFETY: a fresh private anonymous mapping, used only as bytes.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), MIB, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert!(ptr != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        for off in (0..MIB).step_by(PAGE) {
            // SAFETY: off < MIB, inside the mapping.
            unsafe { *(ptr as *mut u8).add(off) = 1 };
        }
        Self(ptr)
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `touched`, unmapped once.
        unsafe { libc::munmap(self.0, MIB) };
    }
}

/// Maps and touches until `chunks` holds `mb` MiB.
fn grow_to(chunks: &mut Vec<Mapped>, mb: usize) {
    while chunks.len() < mb {
        chunks.push(Mapped::touched());
    }
}

fn sawtooth(trough: f64, peak: f64, fill_s: f64, period_s: f64, secs: f64, drift: f64) {
    let t0 = Instant::now();
    let mut retained: Vec<Mapped> = Vec::new();
    let mut garbage: Vec<Mapped> = Vec::new();
    while t0.elapsed().as_secs_f64() < secs {
        let cycle = Instant::now();
        let base = trough + drift * t0.elapsed().as_secs_f64();
        grow_to(&mut retained, base as usize);
        let amplitude = peak - trough;
        loop {
            let done = (cycle.elapsed().as_secs_f64() / fill_s).min(1.0);
            grow_to(&mut garbage, (amplitude * done) as usize);
            if done >= 1.0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        garbage.clear();
        std::thread::sleep(Duration::from_secs_f64((period_s - cycle.elapsed().as_secs_f64()).max(0.0)));
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!("memhog: missing or bad {what}");
        std::process::exit(2)
    })
}

fn main() {
    // Lossy: tests run memhog under names that are not UTF-8 (its comm).
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    match args.get(1).map(String::as_str) {
        Some("hog") => {
            let _m = touch(arg(&args, 2, "MB"));
            std::thread::sleep(Duration::from_secs(600));
        }
        Some("hold") => {
            let _m = touch(arg(&args, 2, "MB"));
            std::thread::sleep(Duration::from_secs_f64(arg(&args, 3, "SECS")));
        }
        Some("leak") => {
            let start: usize = arg(&args, 2, "START_MB");
            let rate: f64 = arg(&args, 3, "RATE_MB_S");
            let max: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
            let mut chunks = vec![touch(start)];
            let mut have = start;
            let t0 = Instant::now();
            loop {
                let want = ((start as f64 + rate * t0.elapsed().as_secs_f64()) as usize).min(max);
                while have < want {
                    chunks.push(touch(1));
                    have += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some("cache") => {
            let path: String = arg(&args, 2, "FILE");
            let file_mb: usize = arg(&args, 3, "FILE_MB");
            let secs: f64 = arg(&args, 4, "SECS");
            let anon: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(0);
            let _m = touch(anon);
            if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < (file_mb * MIB) as u64 {
                let mut f = File::create(&path).expect("create cache file");
                let block = vec![7u8; MIB];
                for _ in 0..file_mb {
                    f.write_all(&block).expect("write cache file");
                }
                f.sync_all().ok();
            }
            let t0 = Instant::now();
            let mut buf = vec![0u8; MIB];
            while t0.elapsed().as_secs_f64() < secs {
                let mut f = File::open(&path).expect("open cache file");
                while f.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            }
        }
        Some("shm") => {
            // Shared file pages on a tmpfs are shmem: charged to this cgroup,
            // counted in the victim's shmem-rss, not reclaimable without swap.
            let path: String = arg(&args, 2, "FILE");
            let mb: usize = arg(&args, 3, "MB");
            let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).expect("open shm file");
            file.set_len((mb * MIB) as u64).expect("size shm file");
            let len = mb * MIB;
            // SAFETY: a fresh shared mapping of a file we own, used only as bytes.
            let ptr = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, std::os::fd::AsRawFd::as_raw_fd(&file), 0)
            };
            assert!(ptr != libc::MAP_FAILED, "mmap {path}: {}", std::io::Error::last_os_error());
            for off in (0..len).step_by(PAGE) {
                // SAFETY: off < len, inside the mapping.
                unsafe { *(ptr as *mut u8).add(off) = 1 };
            }
            std::thread::sleep(Duration::from_secs(600));
        }
        Some("sawtooth") => {
            let drift: f64 = args.get(7).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            sawtooth(arg(&args, 2, "TROUGH_MB"), arg(&args, 3, "PEAK_MB"), arg(&args, 4, "FILL_S"), arg(&args, 5, "PERIOD_S"), arg(&args, 6, "SECS"), drift);
        }
        Some("step") => {
            let (start, step): (usize, usize) = (arg(&args, 2, "START_MB"), arg(&args, 3, "STEP_MB"));
            let (every, steps): (f64, usize) = (arg(&args, 4, "EVERY_S"), arg(&args, 5, "STEPS"));
            let mut chunks = Vec::new();
            grow_to(&mut chunks, start);
            for i in 1..=steps {
                std::thread::sleep(Duration::from_secs_f64(every));
                grow_to(&mut chunks, start + i * step);
            }
            std::thread::sleep(Duration::from_secs(600));
        }
        Some("exp") => {
            let (start, doubling): (f64, f64) = (arg(&args, 2, "START_MB"), arg(&args, 3, "DOUBLING_S"));
            let mut chunks = Vec::new();
            let t0 = Instant::now();
            loop {
                grow_to(&mut chunks, (start * (t0.elapsed().as_secs_f64() / doubling).exp2()) as usize);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        _ => {
            eprintln!("usage: memhog hog MB | hold MB SECS | leak START_MB RATE_MB_S [MAX_MB] | cache FILE FILE_MB SECS [ANON_MB] | shm FILE MB | sawtooth TROUGH_MB PEAK_MB FILL_S PERIOD_S SECS [DRIFT_MB_S] | step START_MB STEP_MB EVERY_S STEPS | exp START_MB DOUBLING_S");
            std::process::exit(2);
        }
    }
}
