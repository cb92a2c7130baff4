//! The composition root: builds the rooms and wires them, kernel -> sources
//! -> model -> outputs. Outputs are bound first so a port or socket
//! conflict fails fast, before any program is loaded; what needs privileges
//! happens before any thread starts, then capabilities are dropped.
//!
//! May depend on: every room.

mod notify;
mod restore;
mod supervise;

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use supervise::Tasks;

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::{
    cli::DaemonArgs,
    config::Config,
    kernel::{
        self,
        clock::KernelClock,
        loader::{KernelProbes, LoadOptions},
    },
    model::{Model, ModelConfig, bus::EventBus, counters::DaemonCounters},
    outputs::{
        alerts::{self, Alerts},
        http,
        journal::{self, Journal},
        metrics::{Metrics, journal::JournalCollector, push::Pusher, reclaim::StallCollector, shipping::ShippingCollector},
        shipping::{self, SinkWorker},
        socket,
        web_config::WebConfig,
    },
    readers::{self, CgroupLayout, CgroupVersion, Hierarchy, PsiKind, TriggerSpec},
    sources::{
        episodes,
        kernel_report::{self, KernelReportFeed},
        kills::{KillExplainer, limit_file},
        psi_triggers::{TriggerConfig, TriggerManager},
        reclaim::ReclaimFeed,
        reconcile::Reconciler,
        records::RecordHandler,
        resolve::CgroupResolver,
        sampler::{Sampler, SamplerConfig},
        workloads::{WorkloadCounters, WorkloadResolver},
    },
};

/// What needs privileges, done before any thread starts.
pub struct Started {
    listener: std::net::TcpListener,
    web: Option<Arc<WebConfig>>,
    socket_listener: std::os::unix::net::UnixListener,
    socket_guard: socket::SocketGuard,
    probes: KernelProbes,
    /// The kernel log, for the kernel's OOM reports; None when unreadable.
    kmsg: Option<crate::readers::kmsg::KmsgReader>,
}

pub fn main(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    one_malloc_arena();
    // A reload request (SIGHUP) during start must not end the process; the
    // configuration is being read now anyway. `run` installs the handler.
    // SAFETY: sets a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    init_logging(args.log_level);
    let config = args.effective_config()?;
    let started = start_privileged(&args, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("oomwatch")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args, config, started))?;
    Ok(ExitCode::SUCCESS)
}

/// The most cgroups the usage walk holds (1 MiB of kernel memory).
const USAGE_WALK_MAX_CGROUPS: usize = 65_536;

/// Binds the outputs, loads and attaches the programs, then lowers the
/// daemon's OOM score and drops the capabilities it no longer needs.
fn start_privileged(args: &DaemonArgs, config: &Config) -> anyhow::Result<Started> {
    // Missing privileges first: otherwise the first file the daemon cannot
    // write (the socket under /run) hides the real cause.
    require_privileges()?;
    // Read before dropping privileges: the key file is usually root-only.
    let web = config.daemon.web_config.as_deref().map(WebConfig::load).transpose()?.map(Arc::new);
    // Outputs first: a port or socket conflict fails before anything loads.
    let listener = http::bind(config.daemon.listen)?;
    let (socket_listener, socket_guard) = socket::bind(&config.daemon.socket)?;
    let load_opts = LoadOptions {
        tracefs: args.tracefs.clone(),
        btf: args.btf.clone(),
        stall_threshold_ns: config.reclaim.stall_threshold.as_nanos().min(u128::from(u64::MAX)) as u64,
        stall_min_interval_ns: config.reclaim.min_interval.as_nanos().min(u128::from(u64::MAX)) as u64,
        usage_walk_root: readers::detect(Path::new("/proc")).ok().map(|l| l.memory_root),
        // The walk's array is kernel memory charged to the daemon (16 bytes
        // a slot, all made at load): cgroups past this are read from files.
        usage_walk_cgroups: config.cgroups.max_cgroups.min(USAGE_WALK_MAX_CGROUPS) as u32,
    };
    // Opened at the log's end before the first probe attaches: the report
    // of every kill a probe sees is printed after this point. Opened after,
    // the kills while the probes attached were reported with no report.
    let kmsg = open_kernel_log();
    let probes = kernel::loader::load(&load_opts)?;
    protect_self(config.daemon.oom_score_adj);
    // Still the only thread: the runtime and the sampler inherit what is left.
    if config.daemon.drop_capabilities {
        match kernel::privileges::drop_after_start() {
            Ok(kept) => log::info!("dropped capabilities after loading; kept: {}", if kept.is_empty() { "none".into() } else { kept.join(", ") }),
            Err(e) => log::warn!("could not drop capabilities: {e}; running with the full set"),
        }
    }
    Ok(Started { listener, web, socket_listener, socket_guard, probes, kmsg })
}

/// Opened while the daemon still has CAP_SYSLOG (kernel.dmesg_restrict=1
/// asks for it at open, not at read). Without it kills are still
/// reported, without the kernel's report.
fn open_kernel_log() -> Option<crate::readers::kmsg::KmsgReader> {
    match kernel_report::open(Path::new(kernel_report::KMSG)) {
        Ok(reader) => Some(reader),
        Err(e) => {
            log::warn!(
                "{e}; kills are reported without the kernel's OOM report (reading the kernel log needs CAP_SYSLOG where kernel.dmesg_restrict=1, and under systemd ProtectKernelLogs=no)"
            );
            None
        }
    }
}

fn require_privileges() -> Result<(), kernel::loader::LoadError> {
    let missing = kernel::privileges::missing_for_bpf(kernel::privileges::effective_caps());
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<_> = missing.iter().map(|&c| kernel::privileges::cap_name(c)).collect();
    Err(kernel::loader::LoadError::Privileges { missing: names.join(" and ") })
}

/// The durable journal, or none (turned off, or the state directory not
/// writable: one clear line, the daemon runs without it). Another daemon on
/// the same state directory is an error.
fn open_journal(config: &Config) -> anyhow::Result<Option<Arc<Journal>>> {
    let c = &config.journal;
    if !c.enabled {
        log::info!("journal: off ([journal] enabled = false); events live in memory only");
        return Ok(None);
    }
    let mut jc = journal::JournalConfig::new(&config.daemon.state_dir);
    jc.retention.max_bytes = c.max_size_mib << 20;
    jc.retention.max_age = c.max_age;
    jc.retention.incident_max_age = c.incident_max_age;
    match Journal::open(jc) {
        Ok(j) => {
            log::info!("journal: {} (seq continues from {})", j.path().display(), j.last_seq());
            Ok(Some(Arc::new(j)))
        }
        Err(e @ journal::JournalError::Busy { .. }) => Err(e.into()),
        Err(e) => {
            log::error!("{e}; running without a journal: events live in memory only, and nothing survives a restart");
            Ok(None)
        }
    }
}

/// The shared state every loop and output holds a handle to.
struct Core {
    layout: Option<CgroupLayout>,
    resolver: Arc<CgroupResolver>,
    clock: Arc<KernelClock>,
    bus: Arc<EventBus>,
    model: Arc<Model>,
    counters: Arc<DaemonCounters>,
    alerts: Arc<Alerts>,
    journal: Option<Arc<Journal>>,
    /// Woken after every sampling pass: the alert rules evaluate fresh data.
    sampled: Arc<tokio::sync::Notify>,
    /// Victims' cgroups named by the kernel's reports, for the kill path.
    reported_victims: Arc<kernel_report::ReportedVictims>,
}

pub async fn run(args: DaemonArgs, config: Config, started: Started) -> anyhow::Result<()> {
    // Signal handlers before anything is served: a SIGHUP (systemctl reload)
    // or SIGTERM sent as soon as /healthz answers must not meet the default
    // action, which ends the process.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
    let shutdown = shutdown_signal()?;
    let Started { listener, web, socket_listener, socket_guard: _socket_guard, mut probes, kmsg } = started;
    let ring = probes.take_ring().context("the eBPF object has no EVENTS ring buffer")?;
    spawn_kernel_logger(&mut probes.ebpf);
    crate::release_freed_memory();
    let journal = open_journal(&config)?;
    let core = build_core(&config, detect_layout(), journal);
    supervise::count_panics(core.counters.panics.clone());
    let mut tasks = Tasks::new();
    take_over_last_run(&core, &tasks);
    let sinks = build_sinks(&config, &core);
    let metrics = build_metrics(&config, &core, &mut probes, &sinks);
    start_sources(&config, &core, &mut probes, &tasks)?;
    start_kernel_reports(kmsg, &core, &tasks);
    start_sinks(sinks, &tasks)?;
    let reader = start_ring_reader(ring, &args, &core, &probes)?;
    log_watching(&config, &probes, web.as_ref().is_some_and(|w| w.tls.is_some()));
    let pusher = start_outputs(&core, metrics, listener, web, socket_listener, &tasks);
    inject_panic(&args, &tasks);
    notify::notify("READY=1");
    let result = supervise(reader, &mut tasks, &mut hup, shutdown, &args, config, &core.alerts).await;
    notify::notify("STOPPING=1");
    if let Some(pusher) = pusher {
        pusher.stop().await;
    }
    drop(probes);
    if let Some(journal) = &core.journal {
        restore::AccountingKeeper::new(journal.clone(), core.model.clone()).keep();
        // What is queued is written before the process goes.
        if !journal.flush(Duration::from_secs(3)) {
            log::warn!("journal: not everything queued was written within 3s of the stop");
        }
    }
    result
}

fn detect_layout() -> Option<CgroupLayout> {
    match readers::detect(Path::new("/proc")) {
        Ok(l) => {
            log::info!("cgroups: {} (memory controller at {})", l.mode, l.memory_root.display());
            Some(l)
        }
        Err(e) => {
            log::warn!("{e}; kills are reported without cgroup paths");
            None
        }
    }
}

/// Before any source runs: the last run's kill accounting goes to the model
/// (the sampler's first scan and the reconciler start from it), and from now
/// on the firing alerts and the accounting are kept in the journal.
fn take_over_last_run(core: &Core, tasks: &Tasks) {
    let Some(journal) = &core.journal else { return };
    restore::restore_kill_accounting(journal, &core.model);
    restore::keep_firing_alerts(&core.alerts, journal.clone());
    let keeper = restore::AccountingKeeper::new(journal.clone(), core.model.clone());
    tasks.spawn("kill-accounting", keeper.run(core.bus.clone()));
}

fn build_core(config: &Config, layout: Option<CgroupLayout>, journal: Option<Arc<Journal>>) -> Core {
    let resolver = Arc::new(CgroupResolver::new(
        layout.as_ref().map(|l| l.memory_root.as_path()),
        layout.as_ref().and_then(|l| l.unified_root.as_deref()),
        CgroupResolver::DEFAULT_CAPACITY,
    ));
    Core {
        layout,
        resolver,
        clock: Arc::new(KernelClock::default()),
        bus: Arc::new(EventBus::with_durable(
            config.daemon.backlog,
            config.daemon.stream_buffer,
            journal.clone().map(|j| j as Arc<dyn crate::model::bus::Durable>),
        )),
        model: Arc::new(Model::new(model_config(config))),
        counters: Arc::new(DaemonCounters::default()),
        reported_victims: Arc::default(),
        alerts: {
            let last = journal.as_deref().map(|j| restore::last_alerts(j, config.alerts.history)).unwrap_or_default();
            restore::log_restored(&last);
            Alerts::restored(config.alerts.clone(), &config.sinks, last.firing, last.history)
        },
        sampled: Arc::new(tokio::sync::Notify::new()),
        journal,
    }
}

/// The registry: the daemon's counters, the model's series, the kernel's
/// counters and probe states, the alerts, and the reclaim stall series
/// when the reclaim probes are attached.
fn build_metrics(config: &Config, core: &Core, probes: &mut KernelProbes, sinks: &[SinkWorker]) -> (Metrics, Option<Pusher>) {
    let mut metrics = Metrics::new(core.model.clone(), probes.take_counters(), probes.probes.clone(), core.counters.clone(), Some(core.alerts.clone()));
    metrics.register_collector(Box::new(JournalCollector { journal: core.journal.clone() }));
    if let Some(journal) = &core.journal {
        let sinks = sinks.iter().map(|s| s.stats.clone()).collect();
        metrics.register_collector(Box::new(ShippingCollector { sinks, journal: journal.clone() }));
    }
    if probes.has_stall_maps() {
        let memstall = probes.attached("memstall_leave_fentry") || probes.attached("memstall_leave_kprobe");
        metrics.register_collector(Box::new(StallCollector { model: core.model.clone(), memstall }));
    }
    let pusher = config.daemon.push_gateway.as_deref().map(|base| {
        let failures = prometheus_client::metrics::counter::Counter::default();
        metrics.register("push_failures", "Pushes to the Pushgateway (--push-gateway) that failed; the daemon log says why", failures.clone());
        Pusher::new(base, &crate::outputs::http_client::hostname(), config.daemon.push_interval, failures)
    });
    (metrics, pusher)
}

/// The shipping sinks the configuration turns on; none without a journal
/// (they deliver from it).
fn build_sinks(config: &Config, core: &Core) -> Vec<SinkWorker> {
    let Some(journal) = &core.journal else {
        if !config.sinks.otlp.is_empty() || !config.sinks.file.is_empty() {
            log::error!("shipping sinks (otlp, file) not started: they deliver from the journal, which is not open");
        }
        return Vec::new();
    };
    shipping::build(&config.sinks, journal, &tokio::runtime::Handle::current())
}

/// Each sink on a thread of its own: a dead receiver holds back nothing else.
fn start_sinks(sinks: Vec<SinkWorker>, tasks: &Tasks) -> anyhow::Result<()> {
    for sink in sinks {
        let task: &'static str = Box::leak(format!("sink-{}", sink.name()).into_boxed_str());
        tasks.spawn_thread(task, move || sink.run()).with_context(|| format!("starting the {task} thread"))?;
    }
    Ok(())
}

/// The loops that feed the model: sampler, PSI triggers, reclaim feed,
/// reconciliation, and the kernel clock's drift correction.
fn start_sources(config: &Config, core: &Core, probes: &mut KernelProbes, tasks: &Tasks) -> anyhow::Result<()> {
    if let Some(layout) = core.layout.clone() {
        raise_nofile_limit();
        let sampler_config = SamplerConfig {
            interval: config.cgroups.sample_interval,
            full_every: config.cgroups.full_sample_every,
            ..SamplerConfig::default()
        };
        let mut sampler = Sampler::new(layout, core.model.clone(), sampler_config)
            .notify_after_each_pass(core.sampled.clone())
            .publish_throttling(core.bus.clone(), core.counters.clone())
            .count_reads(core.counters.clone());
        match probes.take_usage_walk() {
            Some(Ok(walk)) => sampler = sampler.walk_usages(Box::new(walk)),
            Some(Err(e)) => log::warn!("the usage walk could not start ({e}); cgroup usage is read from cgroupfs files"),
            None => {}
        }
        if config.workloads.enabled {
            let counters = WorkloadCounters {
                lookups: core.counters.workload_lookups.clone(),
                errors: core.counters.workload_lookup_errors.clone(),
                dropped: core.counters.workload_lookups_dropped.clone(),
            };
            // Room for every cgroup of a first scan.
            let queue = config.cgroups.max_cgroups + 64;
            let (resolver, feed) = WorkloadResolver::new(config.workloads.roots(), core.model.clone(), queue, counters);
            sampler = sampler.name_workloads(feed);
            tasks.spawn_thread("workloads", move || resolver.run()).context("starting the workload resolver")?;
        }
        tasks.spawn_thread("sampler", move || sampler.run()).context("starting the cgroup sampler")?;
    }
    let triggers = TriggerManager::new(trigger_config(config, core.layout.as_ref())?, core.model.clone(), core.bus.clone(), core.counters.clone());
    tasks.spawn("psi-triggers", triggers.run());
    if let Some(maps) = probes.take_stall_maps() {
        let hierarchy = if probes.facts.btf.is_ok() { Hierarchy::Memory } else { Hierarchy::Unified };
        let memstall = probes.attached("memstall_leave_fentry") || probes.attached("memstall_leave_kprobe");
        let feed = ReclaimFeed::new(maps, core.resolver.clone(), hierarchy, memstall, core.model.clone());
        tasks.spawn("reclaim-feed", feed.run(config.cgroups.sample_interval));
    }
    let reconciler = Reconciler::new(core.layout.clone(), core.model.clone(), core.bus.clone(), core.counters.oom_kills_unobserved.clone());
    tasks.spawn("reconcile", reconciler.run());
    tasks.spawn("incidents", episodes::settle_incidents(core.model.clone(), core.bus.clone(), core.counters.clone()));
    tasks.spawn("clock", core.clock.clone().keep_fresh(Duration::from_secs(60)));
    Ok(())
}

/// The kernel's OOM reports amend the kills (`kernel_report`, `why`).
/// Started after the capabilities were dropped: the thread inherits the
/// reduced set.
fn start_kernel_reports(kmsg: Option<crate::readers::kmsg::KmsgReader>, core: &Core, tasks: &Tasks) {
    let Some(reader) = kmsg else { return };
    log::info!("kernel log: reading OOM reports from {}", reader.path().display());
    let feed = KernelReportFeed::new(core.bus.clone(), core.counters.clone(), limit_file(core.layout.as_ref()), core.reported_victims.clone(), core.model.clone());
    let run = move || {
        // Its report amends a kill already published: it must not take the
        // CPU from the publication (it is woken by the same kill, once per
        // line the kernel prints).
        kernel::sched::lower_priority(KERNEL_REPORTS_NICE);
        feed.run_blocking(reader)
    };
    if let Err(e) = tasks.spawn_thread("kernel-reports", run) {
        log::warn!("kernel log: cannot start its reader thread: {e}; kills are reported without the kernel's report");
    }
}

/// Nice value of the kernel log reader thread.
const KERNEL_REPORTS_NICE: i32 = 5;

fn trigger_config(config: &Config, layout: Option<&CgroupLayout>) -> anyhow::Result<TriggerConfig> {
    // Per-cgroup PSI lives on the unified hierarchy (on hybrid hosts, the
    // one without the memory controller).
    let cgroup_root = layout.and_then(|l| match l.memory_version {
        CgroupVersion::V2 => Some(l.memory_root.clone()),
        CgroupVersion::V1 => l.unified_root.clone(),
    });
    Ok(TriggerConfig {
        spec: TriggerSpec::new(PsiKind::Some, config.pressure.trigger_stall, config.pressure.trigger_window)
            .map_err(|e| anyhow::anyhow!("pressure.trigger_window: {e}"))?,
        max_triggers: config.pressure.max_triggers,
        cgroup_root,
        proc_root: "/proc".into(),
        reconcile_every: Duration::from_secs(2),
    })
}

/// Kernel records -> events, on a thread of their own (`kernel::ring`):
/// a kill is explained and published by the thread the kernel woke.
/// What it ends with (an error polling the ring buffer, or a panic) is
/// sent back for the supervisor.
fn start_ring_reader(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    args: &DaemonArgs,
    core: &Core,
    probes: &KernelProbes,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<anyhow::Error>> {
    let explainer = KillExplainer {
        resolver: core.resolver.clone(),
        clock: core.clock.clone(),
        model: core.model.clone(),
        layout: core.layout.clone(),
        oom_constraints: probes.facts.btf.as_ref().map(|b| b.oom_constraints.clone()).unwrap_or_default(),
        proc_root: "/proc".into(),
        reported_victims: core.reported_victims.clone(),
        inject_victim_gone: args.inject_victim_gone,
        inject_report_late: args.inject_report_late,
    };
    let handler = Arc::new(RecordHandler::new(explainer, core.bus.clone(), core.counters.clone(), args.inject_drop_kills));
    let ring = kernel::ring::SharedRing::new(ring);
    let (ended, ended_rx) = tokio::sync::mpsc::channel(2);
    // Two readers, each kept on a CPU of its own: the CPU a kill keeps busy
    // (the console write of its report) holds one of them at most, and the
    // other reads the kill at once. One reader left to the scheduler was
    // woken on the kill's CPU whenever it had last run there (the previous
    // kill's exit confirmation): 3 ms later (docs/performance.md).
    let cpus = kernel::sched::allowed_cpus(2);
    let pins: Vec<Option<usize>> = if cpus.len() < 2 { vec![None] } else { cpus.into_iter().map(Some).collect() };
    for (i, pin) in pins.into_iter().enumerate() {
        let (ring, handler, counters, ended) = (ring.clone(), handler.clone(), core.counters.clone(), ended.clone());
        std::thread::Builder::new()
            .name(format!("oomwatch-ring{i}"))
            .spawn(move || {
                if let Some(cpu) = pin
                    && let Err(e) = kernel::sched::pin_to(cpu)
                {
                    log::debug!("ring buffer reader {i}: cannot keep it on CPU {cpu}: {e}");
                }
                if let Err(e) = kernel::sched::prefer_short_slice(RING_READER_SLICE) {
                    log::debug!("ring buffer reader: no short scheduler slice ({e}); kills are read at the default one");
                }
                let on_record = |record| handler.handle(record);
                let on_garbage = |e| {
                    counters.decode_errors.inc();
                    log::warn!("dropped a kernel record: {e}");
                };
                let run = std::panic::AssertUnwindSafe(|| kernel::ring::run_blocking(&ring, &on_record, &on_garbage));
                let why = match std::panic::catch_unwind(run) {
                    Ok(e) => anyhow::Error::new(e).context("reading the ring buffer"),
                    Err(_) => anyhow::anyhow!("ring buffer reader panicked"),
                };
                let _ = ended.try_send(why);
            })
            .context("starting a ring buffer reader thread")?;
    }
    Ok(ended_rx)
}

/// The ring buffer reader's work per wakeup (decode, explain, publish) takes
/// well under this; the kernel's minimum custom slice is 0.1 ms.
const RING_READER_SLICE: Duration = Duration::from_micros(200);

/// Test-only fault injection (`--inject-panic TASK`): a supervised task
/// that panics a second after start, to prove it is not silent.
fn inject_panic(args: &DaemonArgs, tasks: &Tasks) {
    if let Some(task) = &args.inject_panic {
        let name: &'static str = Box::leak(task.clone().into_boxed_str());
        tasks.spawn(name, async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            panic!("injected by --inject-panic {name}");
        });
    }
}

/// A running Pushgateway pusher, stopped cleanly at shutdown.
struct PushTask {
    pusher: Pusher,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl PushTask {
    /// A clean stop removes this host's group: absent, not frozen at its
    /// last values (see outputs::metrics::push).
    async fn stop(mut self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(Duration::from_secs(3), &mut self.task).await.is_err() {
            self.task.abort();
            log::debug!("push: the push in flight did not finish; deleting anyway");
        }
        self.pusher.delete(Duration::from_secs(2)).await;
    }
}

fn start_outputs(
    core: &Core,
    (metrics, pusher): (Metrics, Option<Pusher>),
    listener: std::net::TcpListener,
    web: Option<Arc<WebConfig>>,
    socket_listener: std::os::unix::net::UnixListener,
    tasks: &Tasks,
) -> Option<PushTask> {
    let metrics = Arc::new(metrics);
    let push = pusher.map(|p| {
        log::info!("pushing metrics to {} every {}", p.shown_url, humantime::format_duration(p.interval));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(p.clone().run(metrics.clone(), stopped));
        PushTask { pusher: p, stop, task }
    });
    tasks.spawn("http", http::serve(listener, metrics, web));
    tasks.spawn("alerts", alerts::run(core.alerts.clone(), core.model.clone(), core.bus.clone(), core.sampled.clone()));
    let sources = socket::Sources {
        bus: core.bus.clone(),
        model: core.model.clone(),
        counters: core.counters.clone(),
        alerts: core.alerts.clone(),
        journal: core.journal.clone(),
        lanes: Arc::default(),
    };
    tasks.spawn("event-socket", socket::serve(socket_listener, Arc::new(sources)));
    push
}

fn log_watching(config: &Config, probes: &KernelProbes, tls: bool) {
    let attached: Vec<&str> = probes.probes.iter().filter(|p| p.attached()).map(|p| p.spec.name).collect();
    let scheme = if tls { "https" } else { "http" };
    log::info!(
        "oomwatch {} watching: probes [{}], metrics on {scheme}://{}/metrics, events on {}",
        env!("CARGO_PKG_VERSION"),
        attached.join(", "),
        config.daemon.listen,
        config.daemon.socket.display()
    );
}

/// Runs until a signal to stop (Ok) or the ring buffer reader ends (Err:
/// without it the daemon would be blind). SIGHUP reloads the configuration.
async fn supervise(
    mut reader: tokio::sync::mpsc::Receiver<anyhow::Error>,
    tasks: &mut Tasks,
    hup: &mut tokio::signal::unix::Signal,
    shutdown: impl std::future::Future<Output = &'static str>,
    args: &DaemonArgs,
    mut running: Config,
    alerts: &Alerts,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            ended = reader.recv() => {
                return Err(ended.unwrap_or_else(|| anyhow::anyhow!("ring buffer reader stopped")));
            }
            ended = tasks.first_ended() => {
                log::error!("the {} task {}; exiting so that the service manager starts a whole daemon again", ended.task, ended.why);
                anyhow::bail!("the {} task {}", ended.task, ended.why);
            }
            _ = hup.recv() => reload(args, &mut running, alerts),
            signal = &mut shutdown => {
                log::info!("{signal}: shutting down");
                return Ok(());
            }
        }
    }
}

/// SIGHUP: re-read the file; apply it only when it is valid as a whole.
fn reload(args: &DaemonArgs, running: &mut Config, alerts: &Alerts) {
    let Some(path) = &args.config else {
        log::info!("SIGHUP: no --config file to reload; the embedded defaults stay");
        return;
    };
    let new = match args.effective_config() {
        Ok(c) => c,
        Err(e) => {
            log::error!("SIGHUP: {}; keeping the running configuration", crate::error_chain(e.as_ref()));
            return;
        }
    };
    alerts.reconfigure(new.alerts.clone(), &new.sinks);
    let needs_restart = running.sections_needing_restart(&new);
    log::info!(
        "SIGHUP: reloaded {} (alerts and sinks applied{})",
        path.display(),
        if needs_restart.is_empty() { String::new() } else { format!("; changes to {} take effect after a restart", needs_restart.join(", ")) }
    );
    *running = new;
}

/// The daemon allocates little, from a handful of threads: one glibc arena
/// costs no contention, and unlike per-thread arenas it can hand freed
/// memory back after cgroup churn.
///
/// Large blocks always get their own mapping, given back when freed: by
/// default glibc raises that threshold to the size of the last such block
/// freed, so after the first scrape a /metrics body of several MB (10,000
/// cgroups) and its text-format copy came from the heap, where they stayed
/// resident between scrapes.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
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
    builder.filter_level(level).format(|buf, record| {
        use std::io::Write as _;
        // Cgroup and process names in a message are chosen by users: on a
        // terminal their escape sequences would act (anstream strips only
        // ANSI sequences, and only when stderr is not a terminal).
        let message = record.args().to_string();
        let style = buf.default_level_style(record.level());
        writeln!(buf, "[{} {style}{:<5}{style:#}] {}", buf.timestamp(), record.level(), crate::wire::printable(&message))
    });
    // aya's loader narrates every relocation at debug level; that is only
    // useful when debugging the loader itself (RUST_LOG=aya=debug).
    builder.filter_module("aya", level.min(log::LevelFilter::Info));
    builder.filter_module("aya_obj", level.min(log::LevelFilter::Info));
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let _ = builder.try_init();
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

fn model_config(config: &Config) -> ModelConfig {
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
        max_workloads: config.workloads.max_remembered,
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
