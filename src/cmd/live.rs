//! `netledger live`: who is using the link right now. A conntrack dump and the join of a
//! pass every interval, charged against flow state in memory ([`crate::live::meter`]),
//! plus the connections that end in between (conntrack events,
//! [`crate::live::shortflows`]); shown full screen (ratatui over crossterm), or one
//! refresh as a table or JSON lines without a terminal. Writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::attribute::{attribute, Attributed, Delegating, LocalNets, SocketIndex};
use crate::cmd::common;
use crate::daemon::signals;
use crate::live::meter::Meter;
use crate::live::shortflows::ShortFlows;
use crate::live::view::{Grouping, History, Row, Sample, SortKey};
use crate::model::Flow;
use crate::pass::observe_timed;
use crate::prereq;
use crate::report::{self, live as show};
use crate::settings::Live;
use crate::sources::{interfaces, netdev};
use crate::stages::Stages;

/// Run `live`.
pub fn run(s: &Live) -> Result<()> {
    let mut probe = Probe::start(s)?;
    // JSON is one refresh: the full-screen view has no JSON form.
    if s.once || s.json || !std::io::stdout().is_terminal() {
        once(s, &mut probe)
    } else {
        interactive(s, &mut probe)
    }
}

/// The kernel side: the meter, the event thread, the interfaces' counters.
struct Probe {
    proc_root: PathBuf,
    nets: LocalNets,
    /// Whether owner marks name the owners of flows that ended with none known (read-only:
    /// the writers judge them and keep a disagreement, which this reads).
    marks: std::sync::Arc<crate::owner_mark::trust::MarkTrust>,
    delegating: Delegating,
    meter: Meter,
    short: Option<ShortFlows>,
    link: Option<(u64, u64)>,
    at: Instant,
    /// Flows in the last dump.
    flows: u64,
    /// Said in the header.
    notes: Vec<String>,
}

impl Probe {
    /// Check the prerequisites, subscribe to events, and take the baseline.
    fn start(s: &Live) -> Result<Probe> {
        // Checks only: a read-only view changes no sysctl and installs no table.
        prereq::require_accounting(&s.proc_root)?;
        let mut notes = Vec::new();
        let events =
            std::fs::read_to_string(s.proc_root.join("sys/net/netfilter/nf_conntrack_events"))
                .unwrap_or_default();
        let short = if events.trim() == "0" {
            notes.push("short connections missed (nf_conntrack_events=0)".to_string());
            None
        } else {
            // Subscribed before the first dump, so no flow falls between the two. Fails
            // without CAP_NET_ADMIN, naming it.
            Some(ShortFlows::start(s.nets.clone(), s.delegating.clone())?)
        };
        let mut probe = Probe {
            proc_root: s.proc_root.clone(),
            nets: s.nets.clone(),
            marks: crate::owner_mark::trust::MarkTrust::new(s.owner_mark, &s.proc_root),
            delegating: s.delegating.clone(),
            meter: Meter::new(),
            short,
            link: None,
            at: Instant::now(),
            flows: 0,
            notes,
        };
        probe.refresh()?;
        tracing::info!(
            "live: first dump taken, rates follow every {:?}",
            s.interval
        );
        Ok(probe)
    }

    /// One refresh; `None` for the baseline.
    fn refresh(&mut self) -> Result<Option<Sample>> {
        let heard = self
            .short
            .as_ref()
            .map(ShortFlows::take)
            .unwrap_or_default();
        let at = Instant::now();
        let link = netdev::read_netdev(&self.proc_root)
            .ok()
            .map(|d| netdev::link_bytes(&d));
        let mut stages = Stages::start();
        let obs = observe_timed(
            &self.proc_root,
            self.meter.state(),
            &|k| heard.owners.get(k).cloned(),
            &self.nets,
            &self.delegating,
            // Read-only: marks are judged by the writers (a disagreement is kept by them).
            &crate::owner_mark::trust::MarkTrust::off(),
            &mut stages,
        )
        .context("reading the conntrack table and the sockets")?;
        let ended = self.ended(&heard.ended, &heard.owners);
        let now = chrono::Utc::now().timestamp();
        let moved = self.meter.refresh(now, &ended, &obs.flows);
        stages.lap("account");
        tracing::info!(
            flows = obs.flows.len(),
            ended = ended.len(),
            "live refresh: {:.1} ms ({stages})",
            at.elapsed().as_secs_f64() * 1000.0
        );
        self.flows = obs.flows.len() as u64;
        let lost = "conntrack events lost: short connections undercounted".to_string();
        if heard.lost && !self.notes.contains(&lost) {
            self.notes.push(lost);
        }
        let failed = "conntrack events stopped: short connections missed".to_string();
        if heard.failed && !self.notes.contains(&failed) {
            self.notes.push(failed);
        }
        let secs = at.duration_since(self.at).as_secs_f64();
        self.at = at;
        let delta = match (self.link, link) {
            (Some((r0, t0)), Some((r1, t1))) => Some((r1.wrapping_sub(r0), t1.wrapping_sub(t0))),
            _ => None,
        };
        self.link = link;
        Ok(moved.map(|moved| Sample {
            secs,
            moved,
            link: delta,
        }))
    }

    /// The verdicts of flows that ended: the owner remembered of them (from a dump, or
    /// found at their NEW event); no socket is left to look at.
    fn ended(
        &self,
        flows: &[Flow],
        owners: &HashMap<crate::model::FlowKey, crate::attribute::Attribution>,
    ) -> Vec<(Flow, Attributed)> {
        if flows.is_empty() {
            return Vec::new();
        }
        let none = HashMap::new();
        // A connection whose socket closed before its NEW was read (a loaded machine) is
        // named by its owner mark, as the daemon names it.
        self.marks.refresh();
        let subuids = crate::sources::netns::SubUids::host();
        let idx = SocketIndex::new(&[], &none, interfaces::host_addrs())
            .with_subuids(&subuids)
            .with_marks(self.marks.usable());
        flows
            .iter()
            .map(|f| {
                let key = f.key();
                let prior = self.meter.owner(&key).or_else(|| owners.get(&key));
                (f.clone(), attribute(f, &idx, prior, &self.nets))
            })
            .collect()
    }
}

/// Names of the uids in a refresh.
fn names_of<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    names: &mut common::UserNames,
    into: &mut BTreeMap<u32, String>,
) {
    for s in samples {
        for k in s.moved.usage.keys() {
            if let Some(uid) = k.uid {
                into.entry(uid).or_insert_with(|| names.name(uid));
            }
        }
    }
}

/// One refresh: wait an interval after the baseline, print, exit.
fn once(s: &Live, probe: &mut Probe) -> Result<()> {
    let deadline = probe.at + s.interval;
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let sample = probe.refresh()?.context("no refresh after the baseline")?;
    for note in &probe.notes {
        tracing::warn!("{note}");
    }
    let mut names = BTreeMap::new();
    names_of([&sample], &mut common::UserNames::new(None), &mut names);
    let mut out = std::io::stdout().lock();
    if s.json {
        report::write_jsonl(&mut out, &show::json_records(&sample, &names))?;
    } else {
        out.write_all(show::table(&sample, &names).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// What the keys changed.
struct Ui {
    grouping: Grouping,
    sort: SortKey,
    bits: bool,
    paused: bool,
    help: bool,
}

/// Draw the view of `shown` as `ui` has it.
fn draw(
    term: &mut Terminal<CrosstermBackend<std::io::Stdout>>,
    ui: &Ui,
    shown: &History,
    probe: &Probe,
    names: &BTreeMap<u32, String>,
    interval: Duration,
) -> Result<()> {
    let rows: Vec<Row> = shown.rows(ui.grouping, ui.sort);
    let notes = probe.notes.clone();
    term.draw(|f| {
        show::draw(
            f,
            &show::Screen {
                history: shown,
                rows: &rows,
                grouping: ui.grouping,
                sort: ui.sort,
                bits: ui.bits,
                paused: ui.paused,
                help: ui.help,
                interval,
                flows: probe.flows,
                notes: &notes,
                names,
            },
        )
    })
    .context("drawing the view")?;
    Ok(())
}

impl Ui {
    /// What a key press does to the view; `true` to quit. Any key first closes the help.
    fn key(&mut self, k: KeyEvent) -> bool {
        if self.help {
            self.help = false;
            return false;
        }
        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return true,
            _ if ctrl_c => return true,
            KeyCode::Char('u') => self.grouping = Grouping::User,
            KeyCode::Char('p') => self.grouping = Grouping::Program,
            KeyCode::Char('r') => self.grouping = Grouping::Remote,
            KeyCode::Char('g') => self.grouping = self.grouping.next(),
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('b') => self.bits = !self.bits,
            KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Char('?') => self.help = true,
            _ => {}
        }
        false
    }
}

/// Puts the terminal back however the view ends (error, panic included).
struct TerminalGuard {
    stderr: Option<StderrCapture>,
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard> {
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        let guard = TerminalGuard {
            stderr: StderrCapture::start(),
        };
        crossterm::execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            crossterm::cursor::Hide
        )
        .context("entering the alternate screen")?;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
        }));
        Ok(guard)
    }
}

fn restore() {
    let _ = crossterm::execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = terminal::disable_raw_mode();
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        if let Some(c) = self.stderr.take() {
            c.finish();
        }
    }
}

/// Log lines written while the view is on screen would break it: stderr goes to a memory
/// file meanwhile, and what was written there is copied to the real stderr afterwards.
struct StderrCapture {
    saved: std::os::fd::OwnedFd,
    file: std::fs::File,
}

impl StderrCapture {
    fn start() -> Option<StderrCapture> {
        use std::os::fd::{AsFd, AsRawFd};
        let memfd =
            rustix::fs::memfd_create("netledger-live-stderr", rustix::fs::MemfdFlags::CLOEXEC)
                .ok()?;
        let saved = rustix::io::fcntl_dupfd_cloexec(std::io::stderr().as_fd(), 3).ok()?;
        // SAFETY: dup2 onto fd 2 with a valid descriptor we own.
        if unsafe { libc::dup2(memfd.as_raw_fd(), 2) } < 0 {
            return None;
        }
        Some(StderrCapture {
            saved,
            file: std::fs::File::from(memfd),
        })
    }

    fn finish(self) {
        use std::io::{Read, Seek};
        use std::os::fd::AsRawFd;
        // SAFETY: put the saved descriptor back on fd 2.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
        let mut text = String::new();
        let mut f = self.file;
        if f.rewind().is_ok() && f.read_to_string(&mut text).is_ok() {
            let mut seen = std::collections::HashSet::new();
            for line in text.lines().filter(|l| seen.insert(*l)) {
                eprintln!("{line}");
            }
        }
    }
}

/// How often the view looks at the signal flags between refreshes.
const TICK: Duration = Duration::from_millis(250);

/// The full-screen view, until `q` (or SIGTERM, SIGINT, SIGHUP: the terminal is put back
/// all the same).
fn interactive(s: &Live, probe: &mut Probe) -> Result<()> {
    signals::install().context("installing signal handlers")?;
    let guard = TerminalGuard::enter()?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .context("starting the terminal view")?;
    let mut ui = Ui {
        grouping: Grouping::User,
        sort: SortKey::Total,
        bits: true,
        paused: false,
        help: false,
    };
    // What is measured, and what is shown (frozen while paused: the keys still regroup
    // and re-sort it).
    let mut history = History::default();
    let mut frozen: Option<History> = None;
    let mut names = BTreeMap::new();
    let mut lookup = common::UserNames::new(None);
    let mut next = probe.at + s.interval;
    let mut dirty = true;
    loop {
        if dirty {
            let shown = frozen.as_ref().unwrap_or(&history);
            draw(&mut term, &ui, shown, probe, &names, s.interval)?;
            dirty = false;
        }
        if signals::stop_requested() || signals::take_reload() {
            break;
        }
        let wait = next.saturating_duration_since(Instant::now()).min(TICK);
        if event::poll(wait).context("reading the terminal")? {
            match event::read().context("reading the terminal")? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    dirty = true;
                    if ui.key(k) {
                        break;
                    }
                    if ui.paused != frozen.is_some() {
                        frozen = ui.paused.then(|| history.clone());
                    }
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
            continue;
        }
        if Instant::now() < next {
            continue;
        }
        // Measuring goes on while paused, so the window is right when it resumes.
        next += s.interval;
        if let Some(sample) = probe.refresh()? {
            names_of([&sample], &mut lookup, &mut names);
            history.push(sample);
        }
        if Instant::now() > next {
            // A refresh longer than the interval: the next one an interval from now.
            next = Instant::now() + s.interval;
        }
        dirty = true;
    }
    drop(term);
    drop(guard);
    Ok(())
}
