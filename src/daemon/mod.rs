//! `netledger run`: the daemon. Conntrack events make short-lived flows exact; passes
//! on an interval charge long-lived flows as they go.
//!
//! Two threads:
//! - the **listener** ([`listen`]) owns the event socket (subscribed to NEW and DESTROY
//!   *before* the first dump, so no flow falls between them) and attaches owners to NEW
//!   events while their sockets still exist;
//! - the **writer** (this module) owns the database: it stores the events in batches (one
//!   transaction per flush, every `flush_interval` or `flush_events` events) and runs the
//!   passes. Being the only writer, it never interleaves a pass with a flush, so a
//!   DESTROY always charges against the state the last pass left.
//!
//! Overruns (`ENOBUFS`, events lost): the listener grows its receive buffer and the
//! writer runs a pass at once (a dump on its own socket) to resynchronise. Nothing is
//! charged twice: every charge is `current − last charged` against the saved state, and
//! a DESTROY deletes that state in the transaction that charges it. What is lost is only
//! the bytes a lost DESTROY would have charged since the last pass, and the owners of
//! flows whose NEW was lost and whose sockets closed before the pass. A flow that took up
//! the key of a saved one (the same tuple in the same memory: the same conntrack id) is
//! left for that one's DESTROY, which charges and forgets it; when that DESTROY may have
//! been lost — the flow began before the listener read its queue to the end after the
//! overrun, or before the daemon subscribed — the next pass charges the flow from zero
//! at once, never with the saved one's owner (issue 24: it was charged to nobody).
//!
//! Signals: SIGTERM/SIGINT finish the current pass, run a last one while still listening
//! (its dump removes expired entries, whose DESTROY events must be heard), drain the
//! queued events, flush, and exit 0. SIGHUP re-checks the prerequisites (re-applying the sysctls
//! when setup is allowed), re-reads host addresses and drops the program cache. There is
//! no configuration file yet: flags and environment are read once, at start.

pub mod batch;
pub mod claims;
pub mod guard;
pub mod listen;
pub mod metrics_http;
pub mod pass;
pub mod programs;
pub mod recent;
pub mod signals;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tracing::{debug, info, warn};

use crate::pass::{PassConfig, PassOutcome};
use crate::prereq::{self, Needs};
use crate::sources::conntrack::{EventSocket, GROUP_DESTROY, GROUP_NEW};
use crate::sources::interfaces;
use crate::sources::sockdiag::SockDiag;
use crate::store::connections::NotLogged;
use crate::store::retention::Retention;
use crate::store::{OpenOptions, Role, Store};

use crate::sources::conntrack::Timeouts;
use batch::{destroyed_keys, plan_batch, BatchConfig, Resolved};
use listen::{Fresh, Listener, Stats, ToWriter};

/// Longest wait of the writer before it looks at the signal flags again.
pub const TICK: Duration = Duration::from_millis(200);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// What every pass needs.
    pub pass: PassConfig,
    /// Time between passes.
    pub interval: Duration,
    /// Longest time an event waits before it is stored.
    pub flush_interval: Duration,
    /// Events that make a flush at once.
    pub flush_events: usize,
    /// Keep the connection log.
    pub connection_log: bool,
    /// What the connection log leaves out.
    pub log_limits: LogLimits,
    /// Receive buffer of the event socket at start, bytes.
    pub event_buffer: usize,
    /// Largest receive buffer to grow to after overruns, bytes.
    pub max_event_buffer: usize,
    /// Set up the prerequisites (sysctls, nftables table) when missing.
    pub setup: bool,
    /// How long to wait for another writer's database lock.
    pub lock_timeout: Duration,
    /// Print only errors.
    pub quiet: bool,
    /// How long usage rows are kept raw, hourly and daily (rolled up after each pass).
    pub retention: Retention,
    /// Serve `GET /metrics` here (off when `None`); bound at start, not on SIGHUP.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The units with series of their own at that endpoint; read at start, as it is.
    pub metrics_units: crate::store::metrics::UnitSeries,
    /// Quotas, judged after every stored pass and flush.
    pub quota: crate::quota::Policy,
}

/// What the connection log leaves out (issue 24: a user's flood of connections must not
/// fill the disk): local flows unless `local`, and what goes over a token bucket of
/// `rate` rows a second holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Log flows charged to nobody as local too.
    pub local: bool,
    /// Rows a second, on average.
    pub rate: u32,
    /// Rows at once, at most.
    pub burst: u32,
}

/// The connection log's token bucket: rows it may write now.
#[derive(Debug)]
struct LogBucket {
    tokens: f64,
    at: Instant,
}

impl LogBucket {
    fn new(l: &LogLimits) -> LogBucket {
        LogBucket {
            tokens: f64::from(l.burst),
            at: Instant::now(),
        }
    }

    /// Rows that may be logged now.
    fn budget(&mut self, l: &LogLimits) -> u64 {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * f64::from(l.rate);
        self.tokens = (self.tokens + refill).min(f64::from(l.burst));
        self.at = now;
        self.tokens as u64
    }

    fn spend(&mut self, rows: usize) {
        self.tokens = (self.tokens - rows as f64).max(0.0);
    }
}

/// Events kept in memory while the database refuses writes (~1 KiB each).
const MAX_PENDING: usize = 1_000_000;

/// Source rows one roll-up after a pass may move (tens of ms); a backlog clears over
/// passes. The same budget as `snapshot`'s.
const ROLLUP_BUDGET: u64 = 50_000;

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

struct Writer {
    store: Store,
    cfg: DaemonConfig,
    /// The proc root given at start, which SIGHUP's prerequisite check reads.
    start_proc_root: PathBuf,
    fresh: Fresh,
    host: HashSet<IpAddr>,
    timeouts: Timeouts,
    pending: Vec<Resolved>,
    pending_since: Option<Instant>,
    skipped: u64,
    flushes: u64,
    logged: u64,
    log_bucket: LogBucket,
    /// Connections not logged since the last pass (said then), and since the start.
    not_logged: NotLogged,
    not_logged_total: NotLogged,
    duplicates: u64,
    destroys: u64,
    passes: u64,
    pass_cpu: Duration,
    /// Events lost to overruns, as far as the kernel said, and connections left out of
    /// the log; shared with the metrics
    /// endpoint, which reads it at each scrape.
    counters: Arc<metrics_http::Counters>,
    /// Judges quotas after every commit.
    quota: crate::quota::Watcher,
    /// Times accounting may have been off, found by the guard or the passes, to record.
    gaps: guard::Gaps,
    /// What the passes look for (accounting off, a full conntrack table).
    health: crate::prereq::firewall::Health,
    /// Gaps recorded since the last pass, which its line names.
    gaps_since_pass: Vec<crate::prereq::firewall::Gap>,
    /// The guard of the nftables table (stopped when the writer ends).
    _guard: Option<guard::Guard>,
    /// The DESTROY event of an entry that ended before this time (ns since the epoch) may
    /// have been lost (before the subscription, in an overrun, dropped from memory), and
    /// every one received is stored: the passes charge a flow that replaced such an entry
    /// under its key at once ([`crate::account::Hold::destroys_lost_before`]).
    destroys_lost_before: Option<u64>,
    /// Such a time, in force once the events received before it are stored.
    lost_before_unstored: Option<u64>,
}

impl Writer {
    fn push(&mut self, events: Vec<Resolved>, skipped: usize) {
        if self.pending_since.is_none() {
            self.pending_since = Some(Instant::now());
        }
        self.pending.extend(events);
        self.skipped += skipped as u64;
    }

    fn flush_due(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + self.cfg.flush_interval)
    }

    /// Store the pending events in one transaction. On failure they stay pending (the
    /// transaction rolled back, so a retry charges them once).
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            self.pending_since = None;
            self.events_stored();
            return Ok(());
        }
        let keys = destroyed_keys(&self.pending);
        let bcfg = BatchConfig {
            user_name: &crate::sources::users::name_of,
            nets: &self.cfg.pass.nets,
            host: &self.host,
            log: self.cfg.connection_log,
            log_local: self.cfg.log_limits.local,
            log_budget: self.log_bucket.budget(&self.cfg.log_limits),
            now: chrono::Utc::now().timestamp(),
            skipped_messages: self.skipped,
            timeouts: &self.timeouts,
            marks: self.cfg.pass.marks.usable_now(),
        };
        let events = &self.pending;
        let outcome = self
            .store
            .write_events(&keys, |prev| plan_batch(events, prev, &bcfg))
            .with_context(|| {
                format!(
                    "storing {} conntrack events in {}",
                    self.pending.len(),
                    self.store.path().display()
                )
            })?;
        {
            let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
            for e in &self.pending {
                if let Resolved::New { flow, .. } = e {
                    fresh.remove(&flow.key());
                }
            }
        }
        self.flushes += 1;
        self.destroys += keys.len() as u64;
        self.logged += outcome.logged as u64;
        self.duplicates += outcome.duplicates as u64;
        self.log_bucket.spend(outcome.logged + outcome.duplicates);
        for n in [&mut self.not_logged, &mut self.not_logged_total] {
            n.local += outcome.not_logged.local;
            n.over_limit += outcome.not_logged.over_limit;
        }
        for (uid, k) in &outcome.not_logged.over_limit_by {
            *self.not_logged.over_limit_by.entry(*uid).or_default() += k;
        }
        let c = &self.counters;
        c.log_local
            .fetch_add(outcome.not_logged.local, Ordering::Relaxed);
        c.log_over_limit
            .fetch_add(outcome.not_logged.over_limit, Ordering::Relaxed);
        debug!(
            events = self.pending.len(),
            destroyed = keys.len(),
            logged = outcome.logged,
            "flushed"
        );
        self.pending.clear();
        self.pending_since = None;
        self.skipped = 0;
        self.events_stored();
        self.judge_quotas();
        Ok(())
    }

    /// Every event received so far is stored: a time before which DESTROY events may
    /// have been lost comes into force for the passes.
    fn events_stored(&mut self) {
        if let Some(t) = self.lost_before_unstored.take() {
            self.destroys_lost_before = self.destroys_lost_before.max(Some(t));
        }
    }

    /// DESTROY events of entries that ended before `t` (ns) may have been lost.
    fn destroys_lost(&mut self, t: u64) {
        self.lost_before_unstored = self.lost_before_unstored.max(Some(t));
    }

    /// Once a pass: the finished connections the log left out since the last one. Over
    /// the limit is a warning (the log is incomplete); local alone is the default doing
    /// its job, said at the info level.
    fn say_not_logged(&mut self) {
        let n = std::mem::take(&mut self.not_logged);
        let l = &self.cfg.log_limits;
        let local = format!(
            "{} local (loopback, local networks, this host; connection_log_local = true logs them)",
            n.local
        );
        if n.over_limit > 0 {
            // Who went over, most first: a flood is named, whoever makes it.
            let mut by: Vec<(Option<u32>, u64)> = n.over_limit_by.into_iter().collect();
            by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let whose: Vec<String> = by
                .iter()
                .take(3)
                .map(|(uid, k)| match uid {
                    Some(uid) => match crate::sources::users::name_of(*uid) {
                        Some(name) => {
                            format!("{} ({uid}) {k}", crate::report::terminal_safe(&name))
                        }
                        None => format!("uid {uid} {k}"),
                    },
                    None => format!("unattributed {k}"),
                })
                .collect();
            let more = if by.len() > 3 { ", …" } else { "" };
            warn!(
                "connection log: {} finished connections not logged since the last pass: {} \
                 over the limit of {} a second, {} at once (connection_log_rate, \
                 connection_log_burst): {}{more}; {local}; they are charged as always",
                n.local + n.over_limit,
                n.over_limit,
                l.rate,
                l.burst,
                whose.join(", "),
            );
        } else if n.local > 0 {
            info!(
                "connection log: {} finished connections not logged since the last pass: {local}",
                n.local
            );
        }
    }

    /// Quotas after a commit: the hooks run on their own (their threads log how they end).
    fn judge_quotas(&mut self) {
        let now = chrono::Utc::now().timestamp();
        drop(self.quota.after_commit(&mut self.store, now));
    }

    /// A flush that is retried later when it fails (the database may be locked for a
    /// while by a report or a backup).
    fn flush_or_keep(&mut self) {
        if let Err(e) = self.flush() {
            warn!("{e:#}; kept in memory, retried at the next flush");
            self.pending_since = Some(Instant::now());
            if self.pending.len() > MAX_PENDING {
                // Memory is not a database: past this, the oldest half goes.
                let n = self.pending.len() / 2;
                self.pending.drain(..n);
                self.destroys_lost(listen::now_ns());
                tracing::error!(
                    "the database has refused writes for too long: {n} events dropped \
                     (their connections are not logged, and what their DESTROY would have \
                     charged since the last pass is lost); fix the database ({})",
                    self.store.path().display()
                );
            }
        }
    }

    /// Record the gaps found since the last look (kept for the next look if the database
    /// refuses them).
    fn record_gaps(&mut self) {
        let found: Vec<_> =
            std::mem::take(&mut *self.gaps.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, gap) in found.iter().enumerate() {
            if let Err(e) = self.store.record_gap(gap, false) {
                warn!("recording a gap in accounting failed: {e}; retried");
                let mut g = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
                g.extend(found[i..].iter().cloned());
                return;
            }
            self.gaps_since_pass.push(gap.clone());
        }
    }

    /// What the next pass line adds: the gaps recorded since the last pass.
    fn gaps_said(&mut self) -> String {
        let gaps = std::mem::take(&mut self.gaps_since_pass);
        if gaps.is_empty() {
            return String::new();
        }
        let each: Vec<String> = gaps
            .iter()
            .map(|g| match g.off_ms {
                Some(ms) => format!("{} {ms} ms", g.cause),
                None => g.cause.clone(),
            })
            .collect();
        format!(
            "; accounting gaps since the last pass: {} ({})",
            gaps.len(),
            each.join(", ")
        )
    }

    /// After a pass: accounting switched off, conntrack's table full.
    fn look_health(&mut self) {
        let root = &self.cfg.pass.proc_root;
        let found = self.health.look(
            crate::prereq::firewall::acct_off(root),
            None,
            crate::prereq::firewall::CtStats::read(root),
            chrono::Utc::now().timestamp(),
        );
        for g in &found {
            warn!("{}", g.detail);
        }
        self.gaps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(found);
        self.record_gaps();
    }

    fn pass(&mut self, mode: &'static str) -> Option<PassOutcome> {
        self.host = interfaces::host_addrs();
        self.timeouts = Timeouts::read(&self.cfg.pass.proc_root);
        self.cfg.pass.destroys_lost_before = self.destroys_lost_before;
        let cpu0 = thread_cpu();
        let outcome = pass::run_pass(&mut self.store, &self.cfg.pass, &self.fresh, mode);
        let cpu = thread_cpu().saturating_sub(cpu0);
        match outcome {
            Ok(o) => {
                self.passes += 1;
                self.pass_cpu += cpu;
                let gaps = self.gaps_said();
                info!("{} ({mode}, {cpu:.0?} CPU){gaps}", o.summary());
                self.say_not_logged();
                match self
                    .store
                    .roll_up(o.record.started_at, &self.cfg.retention, ROLLUP_BUDGET)
                {
                    Ok(rolled) => debug!("retention: {rolled}"),
                    Err(e) => {
                        warn!("rolling up old usage rows failed: {e}; retried after the next pass")
                    }
                }
                self.judge_quotas();
                self.look_health();
                Some(o)
            }
            Err(e) => {
                warn!("{mode} pass failed: {e:#}; the next pass recounts");
                None
            }
        }
    }

    /// The writer's loop: events, passes on the interval, signals. Returns why it ended
    /// abnormally (`None`: stopped by a signal, everything drained).
    fn serve(
        &mut self,
        l: &Running,
        reload_config: &impl Fn() -> Result<DaemonConfig>,
    ) -> Option<anyhow::Error> {
        let mut next_pass = Instant::now();
        let mut stopping = false;
        loop {
            if signals::stop_requested() && !stopping {
                stopping = true;
                // The last pass runs while the listener still listens: its dump removes
                // expired entries, and their DESTROY events (the final counters) must not
                // go unheard.
                self.flush_or_keep();
                self.pass("final");
                l.stop.store(true, Ordering::SeqCst);
                info!("stopping: draining queued events");
            }
            if signals::take_reload() {
                self.reload(reload_config, &mut next_pass);
                l.reload.store(true, Ordering::SeqCst);
                self.host = interfaces::host_addrs();
            }
            if !stopping && Instant::now() >= next_pass {
                self.flush_or_keep();
                self.pass("run");
                next_pass += self.cfg.interval;
                if next_pass <= Instant::now() {
                    next_pass = Instant::now() + self.cfg.interval;
                }
            }
            if self.flush_due().is_some_and(|t| t <= Instant::now()) {
                self.flush_or_keep();
            }
            self.record_gaps();
            match l.rx.recv_timeout(self.wait(stopping, next_pass)) {
                Ok(msg) => {
                    if let Some(e) = self.receive(msg) {
                        return Some(e);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) if stopping => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    return Some(anyhow::anyhow!(
                        "the conntrack listener thread ended unexpectedly (a bug: restart the \
                         daemon, and report it with this log)"
                    ))
                }
            }
        }
    }

    /// How long to wait for the listener: until the next pass or flush is due, at most a
    /// [`TICK`].
    fn wait(&self, stopping: bool, next_pass: Instant) -> Duration {
        let now = Instant::now();
        let mut wait = TICK;
        if !stopping {
            wait = wait.min(next_pass.saturating_duration_since(now));
        }
        if let Some(t) = self.flush_due() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        wait
    }

    /// Take one message of the listener; `Some` when its socket failed.
    fn receive(&mut self, msg: ToWriter) -> Option<anyhow::Error> {
        match msg {
            ToWriter::Batch { events, skipped } => {
                self.push(events, skipped);
                if self.pending.len() >= self.cfg.flush_events {
                    self.flush_or_keep();
                }
            }
            ToWriter::Overrun {
                lost,
                buffer,
                lost_before_ns,
            } => {
                let lost_text = lost.map_or("an unknown number of".into(), |n| n.to_string());
                self.counters
                    .lost
                    .fetch_add(lost.unwrap_or(0), Ordering::Relaxed);
                warn!(
                    "conntrack events overran the receive buffer: {lost_text} events lost; \
                     buffer grown to {buffer} B; resynchronising from a dump (flows whose \
                     end was lost keep the charges of the last pass)"
                );
                self.destroys_lost(lost_before_ns);
                self.flush_or_keep();
                self.pass("resync");
            }
            ToWriter::Failed(e) => return Some(anyhow::Error::new(e)),
        }
        None
    }

    /// SIGHUP: re-check the prerequisites, take the configuration again (all but the
    /// event buffer and setup settings, kept from the start).
    fn reload(
        &mut self,
        reload_config: &impl Fn() -> Result<DaemonConfig>,
        next_pass: &mut Instant,
    ) {
        let quiet = self.cfg.quiet;
        match prereq::ensure_with(
            &self.start_proc_root,
            self.cfg.setup,
            Needs {
                events: true,
                no_owner_mark: !self.cfg.pass.marks.enabled(),
            },
        ) {
            Ok(changes) => changes.into_iter().for_each(|c| say(quiet, c)),
            Err(e) => warn!("{e}"),
        }
        match reload_config() {
            Ok(new) => {
                if new.interval != self.cfg.interval {
                    *next_pass = Instant::now() + new.interval;
                }
                say(
                    quiet,
                    format!(
                        "reloaded: a pass every {:?}, connection log {}, {} local networks, \
                         prune after {} passes (flags given at start keep their values)",
                        new.interval,
                        if new.connection_log { "on" } else { "off" },
                        new.pass.nets.nets().len(),
                        new.pass.prune_after,
                    ),
                );
                // The listener looks after services' flows with the values it started
                // with: the passes keep them too, so both agree.
                self.quota.set_policy(new.quota.clone());
                let mut new = new;
                new.pass.delegating = self.cfg.pass.delegating.clone();
                new.pass.delegate_grace = self.cfg.pass.delegate_grace;
                // The listener shares the trust in marks: one for the daemon's life.
                new.pass.marks = self.cfg.pass.marks.clone();
                self.cfg = DaemonConfig {
                    event_buffer: self.cfg.event_buffer,
                    max_event_buffer: self.cfg.max_event_buffer,
                    setup: self.cfg.setup,
                    quiet: self.cfg.quiet,
                    metrics_listen: self.cfg.metrics_listen,
                    metrics_units: self.cfg.metrics_units.clone(),
                    ..new
                };
            }
            Err(e) => warn!("reload failed, configuration unchanged: {e}"),
        }
    }

    /// After the loop: store what was received, stop the listener, say what was done,
    /// and turn the loop's `failure` or a last failed flush into the exit error.
    fn finish(
        mut self,
        l: Running,
        started: Instant,
        failure: Option<anyhow::Error>,
    ) -> Result<()> {
        // Whatever ended the loop, store what was received.
        let flushed = self.flush();
        l.stop.store(true, Ordering::SeqCst);
        let _ = l.thread.join();
        say(self.cfg.quiet, self.stopped_line(&l.stats, started));
        if self.duplicates > 0 {
            warn!(
                duplicates = self.duplicates,
                "connection log records already present were not stored twice"
            );
        }
        if let Some(e) = failure {
            return Err(e.context("conntrack event socket failed"));
        }
        if let Err(e) = flushed {
            bail!(
                "{e:#}: {} events received since the last flush were not stored",
                self.pending.len()
            );
        }
        Ok(())
    }

    /// The line said when the daemon stops: what it did, from its and the listener's
    /// counters.
    fn stopped_line(&self, stats: &Stats, started: Instant) -> String {
        let ev = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let news = ev(&stats.news).max(1);
        format!(
            "stopped after {:.0?}: {} events ({} NEW, {} with an owner, {} with a program; {} \
             DESTROY charged) in {} flushes, {} connections logged ({} local and {} over the \
             limit not logged), {} overruns ({} \
             events lost), {} passes ({:.0?} CPU), {} sock_diag lookups ({:.1} µs per NEW event), {:.0?} naming \
             programs ({} process and {} full /proc walks), {} flows on a service's socket handed to \
             their user after NEW, {} NEW owners from the owner mark alone ({} marks checked against \
             live sockets, {} agreed)",
            started.elapsed(),
            ev(&stats.events),
            ev(&stats.news),
            ev(&stats.owned),
            ev(&stats.programs),
            self.destroys,
            self.flushes,
            self.logged,
            self.not_logged_total.local,
            self.not_logged_total.over_limit,
            ev(&stats.overruns),
            ev(&self.counters.lost),
            self.passes,
            self.pass_cpu,
            ev(&stats.lookups),
            ev(&stats.lookup_ns) as f64 / news as f64 / 1000.0,
            Duration::from_nanos(ev(&stats.scan_ns)),
            ev(&stats.process_walks),
            ev(&stats.full_walks),
            ev(&stats.claimed),
            ev(&stats.by_mark),
            self.cfg.pass.marks.checked().0,
            self.cfg.pass.marks.checked().1,
        )
    }
}

/// Print `s` on stderr, prefixed, unless `quiet`.
fn say(quiet: bool, s: String) {
    if !quiet {
        eprintln!("netledger: {s}");
    }
}

/// The listener thread, and what the writer shares with it.
struct Running {
    thread: JoinHandle<()>,
    rx: Receiver<ToWriter>,
    stats: Arc<Stats>,
    /// Set to make the listener drain what is queued and end.
    stop: Arc<AtomicBool>,
    /// Set on SIGHUP, for the listener to refresh what it caches.
    reload: Arc<AtomicBool>,
}

/// Subscribe to conntrack's NEW and DESTROY events and start the listener thread on
/// them. Returns it with the receive buffer the kernel granted, the owners it finds,
/// shared with the passes, and the time (ns) before which events were not heard.
fn start_listener(cfg: &DaemonConfig) -> Result<(Running, usize, Fresh, u64)> {
    // Subscribe before the first dump: a flow born in between is then either in the dump
    // or announced by a NEW event (or both, which the saved state makes harmless). What
    // ended before it was not heard (taken before, so nothing heard is counted lost).
    let unheard_before = listen::now_ns();
    let socket = EventSocket::subscribe(&[GROUP_NEW, GROUP_DESTROY])
        .context("subscribing to conntrack events")?;
    let buffer = socket
        .set_receive_buffer(cfg.event_buffer)
        .context("sizing the conntrack event buffer")?;
    let diag = SockDiag::open()?;
    let fresh: Fresh = Arc::new(Mutex::new(HashMap::new()));
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let listener = Listener {
        socket,
        diag,
        cgroups: crate::pass::cgroups::CgroupNames::walked(),
        proc_root: cfg.pass.proc_root.clone(),
        nets: cfg.pass.nets.clone(),
        delegating: cfg.pass.delegating.clone(),
        delegate_grace: cfg.pass.delegate_grace,
        max_buffer: cfg.max_event_buffer,
        fresh: fresh.clone(),
        stats: stats.clone(),
        stop: stop.clone(),
        reload: reload.clone(),
        continued: Default::default(),
        marks: cfg.pass.marks.clone(),
        containers: crate::containers::Finder::new(crate::containers::Paths {
            proc_root: cfg.pass.proc_root.clone(),
            ..Default::default()
        }),
    };
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("listener".into())
        .spawn(move || listener.run(tx))
        .context("starting the listener thread")?;
    let running = Running {
        thread,
        rx,
        stats,
        stop,
        reload,
    };
    Ok((running, buffer, fresh, unheard_before))
}

/// What the daemon needs of the kernel set up (`needs`), then its database opened as the
/// daemon, with what setup found changed since it last ran here recorded and said.
fn open_store(db: &Path, cfg: &DaemonConfig, needs: Needs) -> Result<Store> {
    let proc_root = &cfg.pass.proc_root;
    for change in prereq::ensure_with(proc_root, cfg.setup, needs)? {
        say(cfg.quiet, change);
    }
    let mut store = Store::open(
        db,
        &OpenOptions {
            busy_timeout: cfg.lock_timeout,
            role: Role::Daemon,
            ..OpenOptions::default()
        },
    )?;
    // The table flushed while no daemon ran: recorded and said, as a timer's pass does.
    for line in crate::store::gaps::record_kept_gaps(&mut store, proc_root)? {
        warn!("{line}");
    }
    Ok(store)
}

/// Run the daemon until SIGTERM/SIGINT; `db` is the database path. `reload` gives the
/// configuration again on SIGHUP (the caller re-reads its configuration file); the event
/// buffer and setup settings keep their values from the start.
pub fn run(
    db: &Path,
    cfg: DaemonConfig,
    reload_config: impl Fn() -> Result<DaemonConfig>,
) -> Result<()> {
    signals::install().context("installing signal handlers")?;
    let proc_root = cfg.pass.proc_root.clone();
    let needs = Needs {
        events: true,
        no_owner_mark: !cfg.pass.marks.enabled(),
    };
    let store = open_store(db, &cfg, needs)?;
    let counters = Arc::new(metrics_http::Counters::default());
    if let Some(addr) = cfg.metrics_listen {
        let units = cfg.metrics_units.clone();
        let bound = metrics_http::spawn(addr, db, counters.clone(), units).with_context(|| {
            format!("cannot listen on {addr} for metrics (--metrics-listen, metrics_listen): is the address this host's and the port free?")
        })?;
        say(cfg.quiet, format!("metrics on http://{bound}/metrics"));
    }
    let (listener, buffer, fresh, unheard_before) = start_listener(&cfg)?;
    let gaps: guard::Gaps = Default::default();
    let guard = guard::spawn(
        proc_root.clone(),
        needs,
        cfg.pass.marks.clone(),
        gaps.clone(),
    );
    // Looked at once now (the subscription above needed CAP_NET_ADMIN, as nft does); each
    // pass looks again.
    cfg.pass.marks.usable();
    say(
        cfg.quiet,
        format!(
            "running (pid {}): a pass every {:?}, events buffer {buffer} B, connection log {}",
            std::process::id(),
            cfg.interval,
            if cfg.connection_log { "on" } else { "off" },
        ),
    );
    let mut w = Writer {
        store,
        cfg: cfg.clone(),
        fresh,
        host: interfaces::host_addrs(),
        timeouts: Timeouts::read(&proc_root),
        start_proc_root: proc_root,
        pending: Vec::new(),
        pending_since: None,
        skipped: 0,
        flushes: 0,
        logged: 0,
        log_bucket: LogBucket::new(&cfg.log_limits),
        not_logged: NotLogged::default(),
        not_logged_total: NotLogged::default(),
        duplicates: 0,
        destroys: 0,
        passes: 0,
        pass_cpu: Duration::ZERO,
        counters,
        quota: crate::quota::Watcher::new(cfg.quota.clone(), false),
        gaps,
        health: Default::default(),
        gaps_since_pass: Vec::new(),
        _guard: guard,
        destroys_lost_before: Some(unheard_before),
        lost_before_unstored: None,
    };
    let started = Instant::now();
    let failure = w.serve(&listener, &reload_config);
    w.finish(listener, started, failure)
}
