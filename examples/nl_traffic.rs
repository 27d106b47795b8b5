//! Scripted traffic for netledger's network-namespace tests (built by `cargo test`).
//!
//! Servers answer requests; clients make them in two phases separated by a line on
//! stdin, so a test can run an accounting pass while the sockets are alive.
//!
//! ```text
//! nl_traffic server tcp|udp BIND              serve requests until killed
//! nl_traffic serve-once tcp BIND              serve one TCP connection, then exit
//! nl_traffic server-closes tcp BIND           serve until killed, closing each connection
//!                                             first, after its one request
//! nl_traffic client tcp|udp|udp-sendto PEER UP DOWN [--bind PORT] [--v6sock]
//! nl_traffic sink tcp BIND                    accept and hold connections (benchmarks)
//! nl_traffic paced tcp PEER RATE              one request of unbounded size, sent at RATE
//!                                             bytes per second until killed (`live`'s tests)
//! nl_traffic hold tcp PEER COUNT              open and hold COUNT connections (benchmarks)
//! nl_traffic stream tcp PEER UP DOWN MS       one long-lived connection: a request every
//!                                             MS milliseconds until a line (or EOF) on stdin
//! nl_traffic sshlike tcp BIND UID             accept connections as sshd does (benchmarks):
//!                                             each held by this root process and by a
//!                                             child of its own running as UID
//! ```
//! A TCP request is a line `UP DOWN\n` followed by UP bytes; the answer is DOWN bytes.
//! A UDP request is a datagram of UP bytes (UP ≥ 8) whose first 8 bytes are DOWN as a
//! big-endian u64; the answer is one datagram of DOWN bytes.
//! A client prints `ready` after its first request, waits for a line on stdin, makes the
//! same request again, closes, and prints `done`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{
    IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::os::fd::{FromRawFd, OwnedFd};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["server", "tcp", bind] => tcp_server(bind, false),
        ["serve-once", "tcp", bind] => tcp_server(bind, true),
        ["server-closes", "tcp", bind] => tcp_server_closing(bind),
        ["server", "udp", bind] => udp_server(bind),
        ["sink", "tcp", bind] => tcp_sink(bind),
        ["sshlike", "tcp", bind, uid] => tcp_sshlike(bind, uid.parse().expect("UID")),
        ["stream", "tcp", peer, up, down, every] => tcp_stream(
            resolve(peer),
            up.parse().expect("UP"),
            down.parse().expect("DOWN"),
            std::time::Duration::from_millis(every.parse().expect("MS")),
        ),
        ["paced", "tcp", peer, rate] => tcp_paced(resolve(peer), rate.parse().expect("RATE")),
        ["hold", "tcp", peer, count] => tcp_hold(resolve(peer), count.parse().expect("COUNT")),
        ["client", kind, peer, up, down, rest @ ..] => {
            let up: usize = up.parse().expect("UP");
            let down: u64 = down.parse().expect("DOWN");
            let mut bind = 0u16;
            let mut v6sock = false;
            let mut it = rest.iter();
            while let Some(o) = it.next() {
                match *o {
                    "--bind" => bind = it.next().expect("--bind PORT").parse().expect("port"),
                    "--v6sock" => v6sock = true,
                    other => panic!("unknown option {other}"),
                }
            }
            let peer = resolve(peer);
            match *kind {
                "tcp" => tcp_client(peer, up, down, bind, v6sock),
                "udp" => udp_client(peer, up, down, bind, true),
                "udp-sendto" => udp_client(peer, up, down, bind, false),
                k => panic!("unknown client kind {k}"),
            }
        }
        _ => {
            eprintln!("usage: see the module documentation of examples/nl_traffic.rs");
            std::process::exit(2);
        }
    }
}

fn resolve(s: &str) -> SocketAddr {
    s.to_socket_addrs()
        .expect("address")
        .next()
        .expect("one address")
}

fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").unwrap();
    out.flush().unwrap();
}

fn wait_for_go() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

fn tcp_server(bind: &str, once: bool) {
    let l = TcpListener::bind(resolve(bind)).expect("bind");
    say("listening");
    for conn in l.incoming() {
        let Ok(conn) = conn else { continue };
        let h = std::thread::spawn(move || serve_tcp(conn));
        if once {
            let _ = h.join();
            say("done");
            return;
        }
    }
}

/// Answer one request per connection, then close it first (the server's socket, not the
/// client's, goes to TIME_WAIT; the client's is gone as soon as it closes in turn).
fn tcp_server_closing(bind: &str) {
    let l = TcpListener::bind(resolve(bind)).expect("bind");
    say("listening");
    for conn in l.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut p = line.split_whitespace().map(|x| x.parse::<u64>().unwrap());
            let (up, down) = (p.next().unwrap(), p.next().unwrap());
            let _ = std::io::copy(&mut (&mut r).take(up), &mut std::io::sink());
            let mut w = conn;
            let _ = std::io::copy(&mut std::io::repeat(b'd').take(down), &mut w);
        });
    }
}

fn serve_tcp(conn: TcpStream) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut p = line.split_whitespace().map(|x| x.parse::<u64>().unwrap());
        let (up, down) = (p.next().unwrap(), p.next().unwrap());
        std::io::copy(&mut (&mut r).take(up), &mut std::io::sink()).unwrap();
        std::io::copy(&mut std::io::repeat(b'd').take(down), &mut w).unwrap();
    }
}

/// A TCP socket of the family the test asks for: `--v6sock` makes an AF_INET6 socket
/// even for an IPv4 peer, which then connects to the IPv4-mapped address.
fn tcp_connect(peer: SocketAddr, bind: u16, v6sock: bool) -> TcpStream {
    let (family, peer) = match (peer, v6sock) {
        (SocketAddr::V4(v4), true) => (
            libc::AF_INET6,
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0)),
        ),
        (SocketAddr::V4(_), false) => (libc::AF_INET, peer),
        (SocketAddr::V6(_), _) => (libc::AF_INET6, peer),
    };
    // SAFETY: plain socket(2); the fd is owned by the TcpStream below.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh, valid descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let local = match family {
        libc::AF_INET => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), bind),
        _ => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), bind),
    };
    sys_addr(&local, |sa, len| {
        // SAFETY: sa/len describe a valid sockaddr for this family.
        let rc = unsafe { libc::bind(fd, sa, len) };
        assert_eq!(rc, 0, "bind {local}: {}", std::io::Error::last_os_error());
    });
    sys_addr(&peer, |sa, len| {
        // SAFETY: as above.
        let rc = unsafe { libc::connect(fd, sa, len) };
        assert_eq!(rc, 0, "connect {peer}: {}", std::io::Error::last_os_error());
    });
    TcpStream::from(owned)
}

fn sys_addr(a: &SocketAddr, f: impl FnOnce(*const libc::sockaddr, libc::socklen_t)) {
    match a {
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
                &sin as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sin) as libc::socklen_t,
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
                &sin6 as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sin6) as libc::socklen_t,
            )
        }
    }
}

fn tcp_client(peer: SocketAddr, up: usize, down: u64, bind: u16, v6sock: bool) {
    let mut s = tcp_connect(peer, bind, v6sock);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut request = |s: &mut TcpStream| {
        writeln!(s, "{up} {down}").unwrap();
        std::io::copy(&mut std::io::repeat(b'u').take(up as u64), s).unwrap();
        let got = std::io::copy(&mut (&mut r).take(down), &mut std::io::sink()).unwrap();
        assert_eq!(got, down, "short answer");
    };
    request(&mut s);
    say("ready");
    wait_for_go();
    request(&mut s);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    // Wait for the server's FIN so the connection is fully closed before we report.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    drop(s);
    say("done");
}

/// A long-lived connection (the soak's): prints `ready` once connected, then makes a
/// request every `every` until stdin gives a line or ends, closes, waits for the server's
/// close and prints `done REQUESTS`.
fn tcp_stream(peer: SocketAddr, up: usize, down: u64, every: std::time::Duration) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut s = tcp_connect(peer, 0, false);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        wait_for_go();
        flag.store(true, Ordering::SeqCst);
    });
    say("ready");
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        writeln!(s, "{up} {down}").unwrap();
        std::io::copy(&mut std::io::repeat(b'u').take(up as u64), &mut s).unwrap();
        let got = std::io::copy(&mut (&mut r).take(down), &mut std::io::sink()).unwrap();
        assert_eq!(got, down, "short answer");
        n += 1;
        std::thread::sleep(every);
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    drop(s);
    say(&format!("done {n}"));
}

fn udp_server(bind: &str) {
    let s = UdpSocket::bind(resolve(bind)).expect("bind");
    say("listening");
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        if n < 8 {
            continue;
        }
        let down = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
        let _ = s.send_to(&vec![b'd'; down], from);
    }
}

fn udp_client(peer: SocketAddr, up: usize, down: u64, bind: u16, connected: bool) {
    assert!(up >= 8, "UDP requests carry DOWN in their first 8 bytes");
    let local = match peer {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::from([0, 0, 0, 0]), bind),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), bind),
    };
    let s = UdpSocket::bind(local).expect("bind");
    if connected {
        s.connect(peer).expect("connect");
    }
    let mut req = vec![b'u'; up];
    req[..8].copy_from_slice(&down.to_be_bytes());
    let mut buf = vec![0u8; 65536];
    let mut request = || {
        let n = if connected {
            s.send(&req).unwrap();
            s.recv(&mut buf).unwrap()
        } else {
            s.send_to(&req, peer).unwrap();
            s.recv_from(&mut buf).unwrap().0
        };
        assert_eq!(n as u64, down);
    };
    request();
    say("ready");
    wait_for_go();
    request();
    drop(s);
    say("done");
}

/// Accept connections and keep them open without a thread each (benchmark scale).
fn tcp_sink(bind: &str) {
    let l = TcpListener::bind(resolve(bind)).expect("bind");
    say("listening");
    let mut held = Vec::new();
    for mut c in l.incoming().flatten() {
        let _ = c.write_all(b"hello\n");
        held.push(c);
    }
}

/// Accept connections like sshd after a login: the accepted socket (this process's, so
/// root's when run as root) is held by this process and by a child that switched to
/// `uid` and holds only that one. Children die with this process.
fn tcp_sshlike(bind: &str, uid: u32) {
    use std::os::fd::AsRawFd;
    let l = TcpListener::bind(resolve(bind)).expect("bind");
    say("listening");
    let mut held: Vec<TcpStream> = Vec::new();
    for mut c in l.incoming().flatten() {
        let _ = c.write_all(b"hello\n");
        let keep = c.as_raw_fd();
        let others: Vec<i32> = held
            .iter()
            .map(|s| s.as_raw_fd())
            .chain([l.as_raw_fd()])
            .collect();
        // SAFETY: the child only makes system calls (no allocation, no locks) and never
        // returns: it holds `keep` until the parent dies.
        unsafe {
            match libc::fork() {
                0 => {
                    let parent = libc::getppid();
                    for fd in &others {
                        libc::close(*fd);
                    }
                    if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                        libc::_exit(1);
                    }
                    // After setuid, which clears the parent-death signal; and the parent
                    // may already be gone.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if libc::getppid() != parent {
                        libc::_exit(0);
                    }
                    let _ = keep;
                    loop {
                        libc::pause();
                    }
                }
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                _ => {}
            }
        }
        held.push(c);
    }
}

/// Open `count` connections to `peer`, say `ready`, and hold them until stdin closes.
fn tcp_hold(peer: SocketAddr, count: usize) {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut s = TcpStream::connect(peer).expect("connect");
        let mut hello = [0u8; 6];
        s.read_exact(&mut hello).expect("hello");
        held.push(s);
    }
    say("ready");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

/// Send to a `server` at `rate` bytes per second, in 10 ms steps on a fixed schedule (a
/// late step is made up by the next), until killed.
fn tcp_paced(peer: SocketAddr, rate: u64) {
    let mut s = TcpStream::connect(peer).expect("connect");
    writeln!(s, "{} 0", u64::MAX / 2).unwrap();
    say("ready");
    let step = std::time::Duration::from_millis(10);
    let t0 = std::time::Instant::now();
    let buf = vec![b'p'; 64 * 1024];
    let mut sent: u64 = 0;
    for i in 1u64.. {
        let due = rate * i / 100;
        while sent < due {
            let n = ((due - sent) as usize).min(buf.len());
            s.write_all(&buf[..n]).expect("send");
            sent += n as u64;
        }
        let at = t0 + step * i as u32;
        std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
    }
}
