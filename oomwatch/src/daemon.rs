//! Wires the rooms together: kernel -> decode -> pipeline -> model/bus ->
//! outputs. Outputs are bound first so a port or socket conflict fails fast,
//! before any program is loaded.

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::{
    api::{http, socket},
    bpf::{self, loader::LoadOptions},
    bus::EventBus,
    cgroup::{
        layout,
        resolve::{CgroupResolver, Hierarchy},
        watch::{Sampler, SamplerConfig},
    },
    cli::DaemonArgs,
    clock::KernelClock,
    metrics::{DaemonCounters, Metrics},
    model::{Model, ModelConfig},
    pipeline::Pipeline,
    stall,
};

pub fn main(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("oomwatch")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).format_target(false);
    // aya's loader narrates every relocation at debug level; that is only
    // useful when debugging the loader itself (RUST_LOG=aya=debug).
    builder.filter_module("aya", level.min(log::LevelFilter::Info));
    builder.filter_module("aya_obj", level.min(log::LevelFilter::Info));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let _ = builder.try_init();
}

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let listener = http::bind(args.listen).await?;
    let (socket_listener, _socket_guard) = socket::bind(&args.socket)?;

    let load_opts = LoadOptions {
        tracefs: args.tracefs.clone(),
        btf: args.btf.clone(),
        stall_threshold_ns: args.stall_threshold.as_nanos().min(u128::from(u64::MAX)) as u64,
        stall_min_interval_ns: args.stall_min_interval.as_nanos().min(u128::from(u64::MAX)) as u64,
    };
    let mut probes = bpf::loader::load(&load_opts)?;
    let ring = probes.take_ring().context("the eBPF object has no EVENTS ring buffer")?;
    let kernel_counters = probes.take_counters();
    let stall_maps = probes.take_stall_maps();
    spawn_kernel_logger(&mut probes.ebpf);
    release_startup_memory();

    let layout = match layout::detect(Path::new("/proc")) {
        Ok(l) => {
            log::info!("cgroups: {} (memory controller at {})", l.mode, l.memory_root.display());
            Some(l)
        }
        Err(e) => {
            log::warn!("{e}; kills are reported without cgroup paths");
            None
        }
    };
    let resolver = Arc::new(CgroupResolver::new(
        layout.as_ref().map(|l| l.memory_root.as_path()),
        layout.as_ref().and_then(|l| l.unified_root.as_deref()),
        CgroupResolver::DEFAULT_CAPACITY,
    ));

    let clock = Arc::new(KernelClock::default());
    let bus = Arc::new(EventBus::new(args.backlog, 4096));
    let model = Arc::new(Model::new(args.model_config()?));
    let counters = Arc::new(DaemonCounters::default());
    let mut metrics = Metrics::new(model.clone(), kernel_counters, probes.probes.clone(), counters.clone());
    let stalls = stall_maps.map(|maps| {
        let reader = Arc::new(stall::StallReader::new(
            maps,
            resolver.clone(),
            if probes.facts.btf.is_ok() { Hierarchy::Memory } else { Hierarchy::Unified },
            probes.attached("memstall_leave_fentry") || probes.attached("memstall_leave_kprobe"),
        ));
        metrics.register_collector(Box::new(stall::metrics::StallCollector { reader: reader.clone(), model: model.clone() }));
        reader
    });
    let metrics = Arc::new(metrics);
    let pipeline = Arc::new(Pipeline::new(resolver, clock.clone(), bus.clone(), model.clone(), counters.clone(), layout.clone()));
    if let Some(layout) = layout {
        raise_nofile_limit();
        let sampler = Sampler::new(layout, model.clone(), SamplerConfig::default());
        std::thread::Builder::new().name("oomwatch-sampler".into()).spawn(move || sampler.run()).context("starting the cgroup sampler")?;
    }

    let attached: Vec<&str> = probes.probes.iter().filter(|p| p.attached()).map(|p| p.spec.name).collect();
    log::info!(
        "oomwatch {} watching: probes [{}], metrics on http://{}/metrics, events on {}",
        env!("CARGO_PKG_VERSION"),
        attached.join(", "),
        args.listen,
        args.socket.display()
    );

    let reader = {
        let pipeline = pipeline.clone();
        let counters = counters.clone();
        tokio::spawn(bpf::reader::run(
            ring,
            move |record| pipeline.handle(record),
            move |e| {
                counters.decode_errors.inc();
                log::warn!("dropped a kernel record: {e}");
            },
        ))
    };
    tokio::spawn(http::serve(listener, metrics));
    tokio::spawn(socket::serve(socket_listener, Arc::new(socket::Sources { bus, model, counters, stalls })));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            clock.refresh();
        }
    });

    tokio::select! {
        result = reader => {
            let err = match result {
                Ok(Ok(())) => anyhow::anyhow!("ring buffer reader stopped"),
                Ok(Err(e)) => anyhow::Error::new(e).context("reading the ring buffer"),
                Err(e) => anyhow::Error::new(e).context("ring buffer reader panicked"),
            };
            return Err(err);
        }
        signal = shutdown_signal() => log::info!("{signal}: shutting down"),
    }
    drop(probes);
    Ok(())
}

/// Parsing kernel BTF peaks at tens of MB and is done once; glibc keeps the
/// freed heap unless asked to give it back.
fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The sampler keeps a few files open per tracked cgroup; the soft limit
/// (often 1024) is too low for thousands of cgroups. Raising it to the hard
/// limit needs no privilege.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

impl DaemonArgs {
    pub fn model_config(&self) -> anyhow::Result<ModelConfig> {
        let globs = |flag: &str, v: &[String]| -> anyhow::Result<Vec<glob::Pattern>> {
            v.iter().map(|g| glob::Pattern::new(g).with_context(|| format!("{flag} '{g}': invalid glob"))).collect()
        };
        if self.max_cgroups == 0 {
            anyhow::bail!("--max-cgroups must be at least 1");
        }
        Ok(ModelConfig {
            max_cgroups: self.max_cgroups,
            include: globs("--include", &self.include)?,
            exclude: globs("--exclude", &self.exclude)?,
            ..ModelConfig::default()
        })
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Forwards kernel-side aya-log records to our log. Programs only log on cold
/// paths (an OOM kill), so this costs nothing in steady state.
fn spawn_kernel_logger(ebpf: &mut aya::Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => {
            tokio::spawn(async move {
                // SAFETY: the logger owns its fd for as long as the AsyncFd lives.
                let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }) else {
                    return;
                };
                loop {
                    let Ok(mut guard) = fd.readable_mut().await else { return };
                    guard.clear_ready();
                    guard.get_inner_mut().flush();
                }
            });
        }
        Err(e) => log::debug!("kernel-side logging unavailable: {e}"),
    }
}
