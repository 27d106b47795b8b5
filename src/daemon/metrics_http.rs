//! The daemon's `/metrics` endpoint (`--metrics-listen`): a small blocking HTTP/1.x server
//! on threads of its own, reading the database through its own read-only connection, so
//! that nothing a client does reaches the passes or the event listener.
//!
//! A hostile or slow client is bounded: the request head must arrive whole within
//! [`HEAD_DEADLINE`] and fit in [`MAX_REQUEST`] bytes; writes time out; at most
//! [`MAX_CONNECTIONS`] connections are served at once and further ones are closed at once
//! (the accept loop never waits on a client). Only `GET /metrics` is served: other paths
//! get 404, other methods 405.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::report::metrics::{encode, DaemonCounts, CONTENT_TYPE};
use crate::store::metrics::UnitSeries;
use crate::store::{OpenOptions, Store};

/// Longest a client may take to send its request line and headers.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head read; a longer one gets 431.
pub const MAX_REQUEST: usize = 8192;
/// Connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest a response write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    db: PathBuf,
    /// The read-only connection, opened at the first scrape (and again after an error).
    store: Mutex<Option<Store>>,
    active: AtomicUsize,
    /// The daemon's counters, shared with its writer.
    counters: Arc<Counters>,
    /// The units with series of their own (`metrics_units`).
    units: UnitSeries,
}

/// What the daemon's writer counts for its endpoint alone (the database does not keep
/// it), read at each scrape.
#[derive(Debug, Default)]
pub struct Counters {
    /// Conntrack events lost to overruns, as the kernel counted them.
    pub lost: AtomicU64,
    /// Finished connections not logged: local ones (`connection_log_local` off).
    pub log_local: AtomicU64,
    /// Finished connections not logged: over the rate or burst.
    pub log_over_limit: AtomicU64,
}

impl Counters {
    /// The values now.
    pub fn counts(&self) -> DaemonCounts {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DaemonCounts {
            events_lost: v(&self.lost),
            log_skipped_local: v(&self.log_local),
            log_skipped_limit: v(&self.log_over_limit),
        }
    }
}

/// Bind `addr` and serve `/metrics` from `db` on a thread of its own, with the daemon's
/// `counters` (read at each scrape). Binding is done here, so that a taken port or a bad
/// address fails the daemon's start.
pub fn spawn(
    addr: SocketAddr,
    db: &Path,
    counters: Arc<Counters>,
    units: UnitSeries,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        db: db.to_owned(),
        store: Mutex::new(None),
        active: AtomicUsize::new(0),
        counters,
        units,
    });
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || accept_loop(listener, shared))?;
    Ok(local)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                warn!("metrics endpoint: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            debug!("metrics endpoint: {MAX_CONNECTIONS} connections busy, one closed");
            continue;
        }
        let s = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                if let Err(e) = serve(stream, &s) {
                    debug!("metrics endpoint: {e}");
                }
                s.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Read the request head (up to the blank line) within the deadline and size limit.
/// `Ok(None)`: too large.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the request ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(None);
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let text = "text/plain; charset=utf-8";
    let Some(head) = read_head(&mut stream)? else {
        respond(
            &mut stream,
            "431 Request Header Fields Too Large",
            "",
            text,
            b"request too large\n",
        )?;
        // Closing with unread input would reset the connection and lose the answer:
        // read a little more (bounded), after saying we are done.
        stream.shutdown(std::net::Shutdown::Write)?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        let _ = io::copy(&mut (&mut stream).take(1 << 20), &mut io::sink());
        return Ok(());
    };
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "", text, b"only /metrics\n");
    }
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            text,
            b"only GET\n",
        );
    }
    match render(shared) {
        Ok(body) => respond(&mut stream, "200 OK", "", CONTENT_TYPE, body.as_bytes()),
        Err(e) => {
            warn!("metrics endpoint: {e}");
            respond(
                &mut stream,
                "500 Internal Server Error",
                "",
                text,
                format!("{e}\n").as_bytes(),
            )
        }
    }
}

/// The exposition, read through the endpoint's own read-only connection.
fn render(shared: &Shared) -> anyhow::Result<String> {
    let mut guard = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(Store::open(
            &shared.db,
            &OpenOptions {
                read_only: true,
                create: false,
                ..OpenOptions::default()
            },
        )?);
    }
    let store = guard.as_ref().expect("opened above");
    match store.metrics_with(&shared.units, chrono::Utc::now().timestamp()) {
        Ok(data) => Ok(encode(
            &data,
            env!("CARGO_PKG_VERSION"),
            Some(shared.counters.counts()),
        )),
        Err(e) => {
            *guard = None;
            Err(e.into())
        }
    }
}
