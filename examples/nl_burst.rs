//! Bursts of short TCP connections for netledger's daemon tests and event benchmark
//! (built by `cargo test`). The peer is an `nl_traffic server tcp` (`… udp` with `--udp`).
//!
//! ```text
//! nl_burst PEER COUNT UP DOWN [--bind-from PORT] [--parallel N] [--gap-ms MS] [--hold-ms MS]
//!          [--udp] [--times] [--from ADDRESS] [--server-closes]
//! ```
//! Makes COUNT connections; each sends the request line `UP DOWN`, UP bytes, reads the
//! DOWN-byte answer, closes its side first and waits for the server's close, so the
//! client's socket ends in TIME_WAIT (owner gone, conntrack entry still there). With
//! `--bind-from PORT` connection i binds local port PORT+i (a test tells its flows apart
//! by port). `--hold-ms MS` keeps each connection open MS milliseconds after its answer
//! (a connection that lives tens of ms, like a web request). `--parallel N` spreads them
//! over N threads. `--udp` makes each "connection" one UDP query of UP bytes from a
//! socket of its own, answered by one datagram of DOWN bytes (a DNS lookup's shape).
//! `--times` prints `conn LOCAL_PORT START_NS END_NS` per connection: wall-clock times
//! (as conntrack's timestamps) just before its first packet and just after its last.
//! `--from ADDRESS` binds each connection to that local address (a test gives each user
//! an address of its own). `--server-closes` waits for the server to close first (`nl_traffic
//! server-closes`) before closing: the client's socket is then gone at once, not in TIME_WAIT.
//! Prints `progress K` every 10 connections and `done COUNT SECONDS` at the end.

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!(
            "usage: nl_burst PEER COUNT UP DOWN [--bind-from PORT] [--parallel N] [--gap-ms MS] \
             [--hold-ms MS] [--udp] [--times]"
        );
        std::process::exit(2);
    }
    let peer: SocketAddr = args[0].parse().expect("PEER as ADDRESS:PORT");
    let count: usize = args[1].parse().expect("COUNT");
    let up: u64 = args[2].parse().expect("UP");
    let down: u64 = args[3].parse().expect("DOWN");
    let (mut bind_from, mut parallel, mut gap) = (None::<u16>, 1usize, Duration::ZERO);
    let mut hold = Duration::ZERO;
    let (mut udp, mut times, mut server_closes) = (false, false, false);
    let mut from: Option<IpAddr> = None;
    let mut it = args[4..].iter();
    while let Some(o) = it.next() {
        match o.as_str() {
            "--udp" => {
                udp = true;
                continue;
            }
            "--times" => {
                times = true;
                continue;
            }
            "--server-closes" => {
                server_closes = true;
                continue;
            }
            _ => {}
        }
        let v = it.next().expect("option value");
        match o.as_str() {
            "--bind-from" => bind_from = Some(v.parse().expect("port")),
            "--parallel" => parallel = v.parse().expect("threads"),
            "--gap-ms" => gap = Duration::from_millis(v.parse().expect("ms")),
            "--hold-ms" => hold = Duration::from_millis(v.parse().expect("ms")),
            "--from" => from = Some(v.parse().expect("address")),
            other => panic!("unknown option {other}"),
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let (next, finished) = (next.clone(), finished.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return;
                }
                let local = bind_from.map(|p| p + i as u16);
                let start = now_ns();
                let port = if udp {
                    query(peer, local, up, down)
                } else {
                    one(peer, local, from, up, down, hold, server_closes)
                };
                if times {
                    let end = now_ns();
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "conn {port} {start} {end}");
                    let _ = out.flush();
                }
                let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
                if n % 10 == 0 {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "progress {n}");
                    let _ = out.flush();
                }
                std::thread::sleep(gap);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a connection failed");
    }
    println!("done {count} {:.3}", t0.elapsed().as_secs_f64());
}

/// Wall-clock nanoseconds since the epoch.
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn any_of(peer: SocketAddr, port: u16) -> SocketAddr {
    let any = match peer.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(any, port)
}

/// One UDP query (`nl_traffic server udp`'s protocol); returns the local port.
fn query(peer: SocketAddr, local: Option<u16>, up: u64, down: u64) -> u16 {
    let s = UdpSocket::bind(any_of(peer, local.unwrap_or(0))).expect("bind");
    s.connect(peer).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = vec![b'u'; up.max(8) as usize];
    req[..8].copy_from_slice(&down.to_be_bytes());
    s.send(&req).expect("send");
    let mut buf = vec![0u8; down as usize + 1];
    let got = s.recv(&mut buf).expect("answer");
    assert_eq!(got as u64, down, "short answer");
    s.local_addr().unwrap().port()
}

/// One TCP connection; returns the local port.
fn one(
    peer: SocketAddr,
    local: Option<u16>,
    from: Option<IpAddr>,
    up: u64,
    down: u64,
    hold: Duration,
    server_closes: bool,
) -> u16 {
    let s = match (local, from) {
        (None, None) => TcpStream::connect(peer).expect("connect"),
        (port, Some(ip)) => bound_connect(SocketAddr::new(ip, port.unwrap_or(0)), peer),
        (Some(port), None) => bound_connect(any_of(peer, port), peer),
    };
    let port = s.local_addr().unwrap().port();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    writeln!(w, "{up} {down}").unwrap();
    std::io::copy(&mut std::io::repeat(b'u').take(up), &mut w).unwrap();
    let got = std::io::copy(&mut (&mut r).take(down), &mut std::io::sink()).unwrap();
    assert_eq!(got, down, "short answer");
    std::thread::sleep(hold);
    if server_closes {
        // The server's FIN first; our close (dropping both halves) answers it.
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest);
        return port;
    }
    w.shutdown(std::net::Shutdown::Write).unwrap();
    // Wait for the server's close: the connection is over when this returns.
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    port
}

/// connect(2) from a fixed local port (std has no bind-before-connect for TCP).
fn bound_connect(local: SocketAddr, peer: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let family = if peer.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned by the TcpStream below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is fresh and owned from here on.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    if local.port() == 0 {
        // Only the address is bound: the port is chosen at connect(2), per destination,
        // as for an unbound socket (IP_BIND_ADDRESS_NO_PORT, Linux 4.2).
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on our fd with a live int of the size given.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let with = |a: &SocketAddr, f: &dyn Fn(*const libc::sockaddr, libc::socklen_t) -> i32| match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            f(
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of_val(&sin) as _,
            )
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            f(
                (&sin6 as *const libc::sockaddr_in6).cast(),
                std::mem::size_of_val(&sin6) as _,
            )
        }
    };
    // SAFETY: each closure gets a valid sockaddr pointer and its length for this family.
    let rc = with(&local, &|sa, len| unsafe { libc::bind(fd, sa, len) });
    assert_eq!(rc, 0, "bind {local}: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let rc = with(&peer, &|sa, len| unsafe { libc::connect(fd, sa, len) });
    assert_eq!(rc, 0, "connect {peer}: {}", std::io::Error::last_os_error());
    stream
}
