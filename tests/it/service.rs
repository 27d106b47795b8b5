//! The systemd units in contrib/systemd, checked as far as a machine without systemd as
//! PID 1 allows: `systemd-analyze verify` and its security exposure score, and the units'
//! command lines run for real with exactly their restrictions (an unprivileged uid holding
//! only the units' capabilities, no new privileges).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/systemd")
        .join(name)
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(unit_path(name)).unwrap()
}

/// The values of `key=` in a unit (all occurrences, in order).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// Copies of the units with /usr/bin/netledger pointing at the binary under test.
fn units_for_verify(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for name in [
        "netledger-snapshot.service",
        "netledger-snapshot.timer",
        "netledger.service",
    ] {
        let text = unit(name).replace("/usr/bin/netledger", bin().to_str().unwrap());
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        out.push(p);
    }
    out
}

/// `systemd-analyze`; every use says to install systemd when it is missing.
fn systemd_analyze() -> Command {
    Command::new("systemd-analyze")
}

#[test]
fn units_pass_systemd_analyze_verify_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let units = units_for_verify(dir.path());
    let o = systemd_analyze()
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.trim().is_empty(), "warnings: {err}");

    // The check can fail: a typo in a directive is reported.
    let bad = dir.path().join("netledger-snapshot.service");
    let text = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(
        &bad,
        text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
    )
    .unwrap();
    let o = systemd_analyze()
        .args(["verify", "--man=no"])
        .arg(&bad)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("NoNewPrivilege"),
        "verify did not notice a typo"
    );
}

#[test]
fn units_are_hardened() {
    let dir = tempfile::tempdir().unwrap();
    units_for_verify(dir.path());
    for name in ["netledger-snapshot.service", "netledger.service"] {
        let o = systemd_analyze()
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.path().join(name))
            .output()
            .expect("systemd-analyze (apt-get install systemd)");
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        let score: f64 = out
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|r| r.split(": ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure score in: {out}"));
        eprintln!("{name}: systemd-analyze security exposure {score}");
        assert!(score <= 2.5, "{name}: exposure {score} > 2.5");
        let u = unit(name);
        for required in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "StateDirectory=netledger",
            "RestrictAddressFamilies=AF_NETLINK AF_UNIX",
        ] {
            assert!(u.contains(required), "{name} lacks {required}");
        }
    }
    let timer = unit("netledger-snapshot.timer");
    assert_eq!(values(&timer, "OnCalendar"), ["minutely"]);
    assert_eq!(values(&timer, "Persistent"), ["true"]);
    assert_eq!(values(&timer, "RandomizedDelaySec"), ["0"]);
}

/// The exposure score `systemd-analyze security` gives `unit` (found on `SYSTEMD_UNIT_PATH`
/// `dir`, with its drop-ins).
fn exposure_on_path(dir: &Path, unit: &str) -> f64 {
    let o = systemd_analyze()
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .args(["security", "--offline=true", "--no-pager", unit])
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    out.lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|r| r.split(": ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {out}"))
}

/// The textfile drop-in (contrib/systemd/netledger-snapshot-textfile.conf), installed as a
/// real drop-in directory next to the unit: `systemd-analyze verify` loads it without a
/// warning, the snapshot unit's exposure stays at or below 2.3 with it, and its
/// privileged step keeps the sandbox ("!", not "+"). Its command is run in
/// tests/metrics.rs (`the_textfile_drop_in_writes_a_file_node_exporter_serves`).
#[test]
fn textfile_drop_in_verifies_and_keeps_the_exposure() {
    let dir = tempfile::tempdir().unwrap();
    units_for_verify(dir.path());
    let without = exposure_on_path(dir.path(), "netledger-snapshot.service");
    let d = dir.path().join("netledger-snapshot.service.d");
    std::fs::create_dir(&d).unwrap();
    let text = unit("netledger-snapshot-textfile.conf");
    // The pass as the unit runs it, plus the staging file.
    let exec = values(&unit("netledger-snapshot.service"), "ExecStart");
    assert_eq!(
        values(&text, "ExecStart"),
        [
            String::new(),
            format!(
                "{} --metrics-textfile /var/lib/netledger/netledger.prom",
                exec[0]
            )
        ]
    );
    // Only copying and renaming runs as root, and with the rest of the sandbox ("!").
    let post = values(&text, "ExecStartPost");
    assert_eq!(post.len(), 2, "{post:?}");
    assert!(
        post[0].starts_with("!/usr/bin/install -m 0644 "),
        "{post:?}"
    );
    assert!(post[1].starts_with("!/usr/bin/mv -f "), "{post:?}");
    assert_eq!(
        values(&text, "ReadWritePaths"),
        ["-/var/lib/prometheus/node-exporter"]
    );
    std::fs::write(
        d.join("textfile.conf"),
        text.replace("/usr/bin/netledger", bin().to_str().unwrap()),
    )
    .unwrap();
    let verify = |what: &str| {
        let o = systemd_analyze()
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
            .args(["verify", "--man=no", "netledger-snapshot.service"])
            .output()
            .expect("systemd-analyze (apt-get install systemd)");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{what}: {err}");
        err
    };
    let err = verify("with the drop-in");
    assert!(err.trim().is_empty(), "warnings: {err}");
    let with = exposure_on_path(dir.path(), "netledger-snapshot.service");
    eprintln!("netledger-snapshot.service: exposure {without} alone, {with} with the drop-in");
    assert!(with <= 2.3, "exposure {with} > 2.3 with the drop-in");
    // The drop-in is read: a typo in it is reported.
    std::fs::write(
        d.join("textfile.conf"),
        text.replace("ReadWritePaths=", "ReadWritePath=")
            .replace("/usr/bin/netledger", bin().to_str().unwrap()),
    )
    .unwrap();
    let err = verify("with a typo");
    assert!(
        err.contains("ReadWritePath"),
        "the drop-in was not read: {err}"
    );
}

/// Run the snapshot unit's ExecStart as its restrictions allow: a fresh unprivileged uid,
/// `caps` as inheritable, ambient and bounding set, no new privileges, the database in a
/// state directory of its own.
fn run_as_service(ns: &Netns, svc: &TestUser, db: &Path, caps: &[String]) -> Output {
    let exec = values(&unit("netledger-snapshot.service"), "ExecStart")
        .pop()
        .unwrap();
    let mut words: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    assert_eq!(words[0], "/usr/bin/netledger");
    words[0] = bin().to_str().unwrap().to_string();
    for w in &mut words {
        if w == "/var/lib/netledger/netledger.db" {
            *w = db.to_str().unwrap().to_string();
        }
    }
    let caps: Vec<&str> = caps.iter().map(String::as_str).collect();
    as_service(ns, svc, &caps).args(&words).output().unwrap()
}

/// (program, total bytes) of `uid`'s traffic, from `top --by program --json` (as root).
fn programs_of(db: &Path, uid: u32) -> Vec<(Option<String>, u64)> {
    let out = run(Command::new(bin())
        .args(["top", "--by", "program", "--json", "--since", "1d", "--db"])
        .arg(db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["uid"] == uid)
        .map(|r| {
            (
                r["program"].as_str().map(str::to_string),
                r["total_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn snapshot_works_with_exactly_the_units_capabilities_and_each_is_needed() {
    if !require_root("snapshot_works_with_exactly_the_units_capabilities_and_each_is_needed") {
        return;
    }
    let caps: Vec<String> = values(&unit("netledger-snapshot.service"), "AmbientCapabilities")
        .pop()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(
        values(&unit("netledger-snapshot.service"), "CapabilityBoundingSet"),
        [caps.join(" ")],
        "bounding set and ambient set differ"
    );

    // A namespace with an "internet" peer, prepared as ExecStartPre=+netledger setup does.
    let host = Netns::new("nlsh");
    let inet = Netns::new("nlsi");
    host.veth(
        "hi",
        &["198.51.100.1/24"],
        &inet,
        "ih",
        &["198.51.100.2/24"],
    );
    run(host.cmd(bin()).arg("setup"));

    let tb = traffic_bin();
    let mut server = Proc::spawn("server", {
        let mut c = inet.cmd(&tb.path);
        c.args(["server", "tcp", "0.0.0.0:9000"]);
        c
    });
    server.expect("listening");
    // Another user's long-lived connection: naming its program needs the fd scan.
    let alice = TestUser::new("nlsa");
    let mut client = Proc::spawn("alice client", {
        let mut c = alice.cmd(&host, &tb.path);
        c.args(["client", "tcp", "198.51.100.2:9000", "1000", "100000"]);
        c
    });
    client.expect("ready");

    let svc = TestUser::new("nlss");
    let state = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(state.path(), Some(svc.uid), Some(svc.gid)).unwrap();

    // All of the unit's capabilities: works, and alice's program is named.
    let db = state.path().join("all.db");
    let o = run_as_service(&host, &svc, &db, &caps);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "with {caps:?}: {err}");
    assert!(
        !err.contains("CAP_"),
        "a capability was reported missing: {err}"
    );
    let progs = programs_of(&db, alice.uid);
    assert_eq!(progs.len(), 1, "{progs:?}");
    assert_eq!(progs[0].0.as_deref(), Some("nl_traffic"));
    assert!(progs[0].1 > 100_000);

    // Each capability is needed.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let db = state.path().join(format!("{missing}.db"));
        let o = run_as_service(&host, &svc, &db, &fewer);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        eprintln!(
            "without {missing}: exit {:?}: {}",
            o.status.code(),
            err.trim()
        );
        match missing.as_str() {
            "CAP_NET_ADMIN" => {
                assert_eq!(o.status.code(), Some(1), "{err}");
                assert!(err.contains("needs CAP_NET_ADMIN"), "{err}");
            }
            "CAP_SYS_PTRACE" | "CAP_DAC_READ_SEARCH" => {
                // uids stay exact (they come from the socket tables); programs are lost,
                // and the warning names what is missing.
                assert!(o.status.success(), "{err}");
                assert!(
                    err.contains("needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
                    "{err}"
                );
                let progs = programs_of(&db, alice.uid);
                assert_eq!(progs.len(), 1, "{progs:?}");
                assert_eq!(progs[0].0, None, "program found without {missing}");
            }
            other => panic!("unit grants {other}: is it needed? extend this test"),
        }
    }
    client.go();
    client.expect("done");
}

/// The containers drop-in (contrib/systemd/netledger-containers.conf), installed as a real
/// drop-in directory of each unit: `systemd-analyze verify` loads it without a warning,
/// it adds CAP_SYS_ADMIN and network namespaces only, and the exposure stays at or below
/// 2.5. Its capabilities are run for real in tests/containers.rs
/// (`containers_are_placed_with_the_units_capabilities_with_and_without_the_drop_in`).
#[test]
fn containers_drop_in_verifies_and_keeps_the_exposure() {
    let text = unit("netledger-containers.conf");
    assert_eq!(values(&text, "AmbientCapabilities"), ["CAP_SYS_ADMIN"]);
    assert_eq!(values(&text, "CapabilityBoundingSet"), ["CAP_SYS_ADMIN"]);
    assert_eq!(values(&text, "RestrictNamespaces"), ["net"]);
    for name in ["netledger.service", "netledger-snapshot.service"] {
        let dir = tempfile::tempdir().unwrap();
        units_for_verify(dir.path());
        let without = exposure_on_path(dir.path(), name);
        let d = dir.path().join(format!("{name}.d"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("containers.conf"), &text).unwrap();
        let o = systemd_analyze()
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.path().display()))
            .args(["verify", "--man=no", name])
            .output()
            .expect("systemd-analyze (apt-get install systemd)");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success() && err.trim().is_empty(), "{name}: {err}");
        let with = exposure_on_path(dir.path(), name);
        eprintln!("{name}: exposure {without} alone, {with} with the containers drop-in");
        assert!(
            with <= 2.5,
            "{name}: exposure {with} > 2.5 with the drop-in"
        );
    }
}
