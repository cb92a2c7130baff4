//! Wires the rooms together: kernel -> decode -> pipeline -> model/bus ->
//! outputs. Outputs are bound first so a port or socket conflict fails fast,
//! before any program is loaded.

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::{
    alert::Alerts,
    api::{http, socket},
    bpf::{self, loader::LoadOptions},
    bus::EventBus,
    cgroup::{
        CgroupVersion, layout,
        resolve::{CgroupResolver, Hierarchy},
        watch::{Sampler, SamplerConfig},
    },
    cli::DaemonArgs,
    clock::KernelClock,
    metrics::{DaemonCounters, Metrics},
    model::{Model, ModelConfig},
    pipeline::Pipeline,
    pressure::{
        StallKind, TriggerSpec,
        triggers::{TriggerConfig, TriggerManager},
    },
    stall,
};

/// What needs privileges, done before any thread starts.
pub struct Started {
    listener: std::net::TcpListener,
    web: Option<Arc<crate::api::web_config::WebConfig>>,
    socket_listener: std::os::unix::net::UnixListener,
    socket_guard: socket::SocketGuard,
    probes: bpf::loader::KernelProbes,
}

pub fn main(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    one_malloc_arena();
    // A reload request (SIGHUP) during start must not end the process; the
    // configuration is being read now anyway. `run` installs the handler.
    // SAFETY: sets a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    init_logging(args.log_level);
    let config = args.effective_config()?;
    // Read before dropping privileges: the key file is usually root-only.
    let web = config.daemon.web_config.as_deref().map(crate::api::web_config::WebConfig::load).transpose()?.map(Arc::new);
    // Outputs first: a port or socket conflict fails before anything loads.
    let listener = http::bind(config.daemon.listen)?;
    let (socket_listener, socket_guard) = socket::bind(&config.daemon.socket)?;
    let load_opts = LoadOptions {
        tracefs: args.tracefs.clone(),
        btf: args.btf.clone(),
        stall_threshold_ns: config.reclaim.stall_threshold.as_nanos().min(u128::from(u64::MAX)) as u64,
        stall_min_interval_ns: config.reclaim.min_interval.as_nanos().min(u128::from(u64::MAX)) as u64,
    };
    let probes = bpf::loader::load(&load_opts)?;
    protect_self(config.daemon.oom_score_adj);
    // Still the only thread: the runtime and the sampler inherit what is left.
    if config.daemon.drop_capabilities {
        match bpf::privileges::drop_after_start() {
            Ok(kept) => log::info!("dropped capabilities after loading; kept: {}", if kept.is_empty() { "none".into() } else { kept.join(", ") }),
            Err(e) => log::warn!("could not drop capabilities: {e}; running with the full set"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("oomwatch")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args, config, Started { listener, web, socket_listener, socket_guard, probes }))?;
    Ok(ExitCode::SUCCESS)
}

/// The daemon allocates little, from a handful of threads: one glibc arena
/// costs no contention, and unlike per-thread arenas it can hand freed
/// memory back after cgroup churn.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The OOM watcher must not be what the OOM killer picks.
fn protect_self(oom_score_adj: i32) {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", oom_score_adj.to_string()) {
        log::warn!(
            "/proc/self/oom_score_adj: cannot set {oom_score_adj}: {e} (lowering it needs CAP_SYS_RESOURCE; under systemd use OOMScoreAdjust={oom_score_adj}); the kernel may pick oomwatch as an OOM victim"
        );
    }
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

pub async fn run(args: DaemonArgs, config: crate::config::Config, started: Started) -> anyhow::Result<()> {
    // Signal handlers before anything is served: a SIGHUP (systemctl reload)
    // or SIGTERM sent as soon as /healthz answers must not meet the default
    // action, which ends the process.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
    let shutdown = shutdown_signal()?;
    let Started { listener, web, socket_listener, socket_guard: _socket_guard, mut probes } = started;
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
    let bus = Arc::new(EventBus::new(config.daemon.backlog, config.daemon.stream_buffer));
    let model = Arc::new(Model::new(model_config(&config)));
    let counters = Arc::new(DaemonCounters::default());
    let alerts = Alerts::new(config.alerts.clone(), &config.sinks);
    let mut metrics = Metrics::new(model.clone(), kernel_counters, probes.probes.clone(), counters.clone(), Some(alerts.clone()));
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
    let pusher = config.daemon.push_gateway.as_deref().map(|base| {
        let failures = prometheus_client::metrics::counter::Counter::default();
        metrics.register("push_failures", "Pushes to the Pushgateway (--push-gateway) that failed; the daemon log says why", failures.clone());
        crate::metrics::push::Pusher::new(base, &crate::api::client::hostname(), config.daemon.push_interval, failures)
    });
    let metrics = Arc::new(metrics);
    let mut pipeline = Pipeline::new(resolver, clock.clone(), bus.clone(), model.clone(), counters.clone(), layout.clone());
    pipeline.oom_constraints = probes.facts.btf.as_ref().map(|b| b.oom_constraints.clone()).unwrap_or_default();
    pipeline.drop_kill_records.store(args.inject_drop_kills, std::sync::atomic::Ordering::Relaxed);
    let reconciler = crate::reconcile::Reconciler::new(layout.clone(), model.clone(), bus.clone(), counters.oom_kills_unobserved.clone());
    let pipeline = Arc::new(pipeline);
    let pressure_root = layout.as_ref().and_then(|l| match l.memory_version {
        CgroupVersion::V2 => Some(l.memory_root.clone()),
        CgroupVersion::V1 => l.unified_root.clone(),
    });
    let triggers = TriggerManager::new(
        TriggerConfig {
            spec: TriggerSpec::new(StallKind::Some, config.pressure.trigger_stall, config.pressure.trigger_window)
                .map_err(|e| anyhow::anyhow!("pressure.trigger_window: {e}"))?,
            max_triggers: config.pressure.max_triggers,
            cgroup_root: pressure_root,
            proc_root: "/proc".into(),
            reconcile_every: Duration::from_secs(2),
        },
        model.clone(),
        bus.clone(),
        counters.clone(),
    );
    let sampled = Arc::new(tokio::sync::Notify::new());
    if let Some(layout) = layout {
        raise_nofile_limit();
        let sampler = Sampler::new(
            layout,
            model.clone(),
            SamplerConfig {
                interval: config.cgroups.sample_interval,
                full_every: config.cgroups.full_sample_every,
                ..SamplerConfig::default()
            },
        )
        .notify_after_each_pass(sampled.clone());
        std::thread::Builder::new().name("oomwatch-sampler".into()).spawn(move || sampler.run()).context("starting the cgroup sampler")?;
    }

    let attached: Vec<&str> = probes.probes.iter().filter(|p| p.attached()).map(|p| p.spec.name).collect();
    let scheme = if web.as_ref().is_some_and(|w| w.tls.is_some()) { "https" } else { "http" };
    log::info!(
        "oomwatch {} watching: probes [{}], metrics on {scheme}://{}/metrics, events on {}",
        env!("CARGO_PKG_VERSION"),
        attached.join(", "),
        config.daemon.listen,
        config.daemon.socket.display()
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
    let pushing = pusher.clone().map(|p| {
        log::info!("pushing metrics to {} every {}", p.url, humantime::format_duration(p.interval));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        (stop, tokio::spawn(p.run(metrics.clone(), stopped)))
    });
    tokio::spawn(http::serve(listener, metrics, web));
    tokio::spawn(triggers.run());
    tokio::spawn(reconciler.run());
    tokio::spawn(crate::alert::run(alerts.clone(), model.clone(), bus.clone(), sampled));
    tokio::spawn(socket::serve(socket_listener, Arc::new(socket::Sources { bus, model: model.clone(), counters, alerts: alerts.clone(), stalls: stalls.clone() })));
    if let Some(reader) = stalls.clone() {
        // Reclaim stall totals feed the model's per-cgroup stall ratio
        // (the reclaim_storm alert); the maps are read once a second.
        let model = model.clone();
        let every = running_interval(&config);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let reader = reader.clone();
                let Ok(totals) = tokio::task::spawn_blocking(move || reader.per_cgroup(|_| true)).await else { continue };
                let now = std::time::Instant::now();
                for (path, s) in totals {
                    model.observe_reclaim_total(&path, s.total_ns, now);
                }
            }
        });
    }
    let mut running = config;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            clock.refresh();
        }
    });

    tokio::pin!(reader);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            result = &mut reader => {
                let err = match result {
                    Ok(Ok(())) => anyhow::anyhow!("ring buffer reader stopped"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("reading the ring buffer"),
                    Err(e) => anyhow::Error::new(e).context("ring buffer reader panicked"),
                };
                return Err(err);
            }
            _ = hup.recv() => reload(&args, &mut running, &alerts),
            signal = &mut shutdown => {
                log::info!("{signal}: shutting down");
                break;
            }
        }
    }
    if let (Some(pusher), Some((stop, mut task))) = (&pusher, pushing) {
        // A clean stop removes this host's group: absent, not frozen at its
        // last values (see metrics::push).
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(3), &mut task).await.is_err() {
            task.abort();
            log::debug!("push: the push in flight did not finish; deleting anyway");
        }
        pusher.delete(Duration::from_secs(2)).await;
    }
    drop(probes);
    Ok(())
}

fn running_interval(config: &crate::config::Config) -> Duration {
    config.cgroups.sample_interval
}

/// SIGHUP: re-read the file; apply it only when it is valid as a whole.
fn reload(args: &DaemonArgs, running: &mut crate::config::Config, alerts: &Alerts) {
    let Some(path) = &args.config else {
        log::info!("SIGHUP: no --config file to reload; the embedded defaults stay");
        return;
    };
    let new = match args.effective_config() {
        Ok(c) => c,
        Err(e) => {
            log::error!("SIGHUP: {e:#}; keeping the running configuration");
            return;
        }
    };
    alerts.reconfigure(new.alerts.clone(), &new.sinks);
    let mut needs_restart = Vec::new();
    if new.daemon != running.daemon {
        needs_restart.push("[daemon]");
    }
    if new.cgroups != running.cgroups {
        needs_restart.push("[cgroups]");
    }
    if new.pressure != running.pressure {
        needs_restart.push("[pressure]");
    }
    if new.reclaim != running.reclaim {
        needs_restart.push("[reclaim]");
    }
    if new.forecast != running.forecast {
        needs_restart.push("[forecast]");
    }
    log::info!(
        "SIGHUP: reloaded {} (alerts and sinks applied{})",
        path.display(),
        if needs_restart.is_empty() { String::new() } else { format!("; changes to {} take effect after a restart", needs_restart.join(", ")) }
    );
    *running = new;
}

/// Parsing kernel BTF peaks at tens of MB and is done once; glibc keeps the
/// freed heap unless asked to give it back.
pub fn release_startup_memory() {
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

fn model_config(config: &crate::config::Config) -> ModelConfig {
    // Globs were validated with the config.
    let globs = |v: &[String]| v.iter().filter_map(|g| glob::Pattern::new(g).ok()).collect();
    ModelConfig {
        max_cgroups: config.cgroups.max_cgroups,
        include: globs(&config.cgroups.include),
        exclude: globs(&config.cgroups.exclude),
        removal_grace: config.cgroups.removal_grace,
        forecast: crate::model::ForecastParams {
            window_s: config.forecast.window.as_secs().max(2) as u32,
            min_points: config.forecast.min_points,
            min_growth_fraction: config.forecast.min_growth_fraction,
            horizon_s: config.forecast.horizon.as_secs_f64(),
        },
        ..ModelConfig::default()
    }
}

/// Registers the handlers now; the future resolves on the first signal.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
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
