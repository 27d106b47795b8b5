//! Configuration precedence: built-in defaults < file < NETLEDGER_* environment < flags.
//! One test in its own binary, because it sets environment variables.

use std::path::Path;

use clap::Parser;
use netledger::cli::Cli;
use netledger::settings::{Accounting, Command, Settings};

fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
    let cli =
        Cli::try_parse_from(std::iter::once("netledger").chain(args.iter().copied())).unwrap();
    netledger::settings::resolve(cli)
}

fn parse(args: &[&str]) -> Settings {
    resolve(args).unwrap()
}

fn snapshot_args(s: &Settings) -> &Accounting {
    match &s.command {
        Command::Snapshot(a) => &a.accounting,
        other => panic!("{other:?}"),
    }
}

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

#[test]
fn defaults_then_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("netledger.toml");
    std::fs::write(
        &conf,
        "db = \"/file.db\"\nlocal_networks = [\"198.51.100.0/24\"]\nprune_after = 7\n\
         lock_timeout = \"2s\"\nnames = \"/file/names\"\n",
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    std::env::remove_var("NETLEDGER_DB");
    std::env::remove_var("NETLEDGER_LOCAL_NETWORKS");

    // An explicitly named file must exist.
    let e = resolve(&["--config", "/nonexistent.toml", "snapshot"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent.toml"), "{e}");

    // File over defaults.
    let s = parse(&["--config", c, "snapshot"]);
    let a = snapshot_args(&s);
    assert_eq!(s.db, Path::new("/file.db"));
    assert_eq!(a.pass.nets.nets(), nets(&["198.51.100.0/24"]));
    assert_eq!(a.pass.prune_after, 7);
    assert_eq!(a.lock_timeout, std::time::Duration::from_secs(2));
    let s = parse(&["--config", c, "top"]);
    match &s.command {
        Command::Top(t) => assert_eq!(t.names.path, Path::new("/file/names")),
        other => panic!("{other:?}"),
    }

    // Environment over file.
    std::env::set_var("NETLEDGER_DB", "/env.db");
    std::env::set_var("NETLEDGER_LOCAL_NETWORKS", "203.0.113.0/24,2001:db8::/32");
    let s = parse(&["--config", c, "snapshot"]);
    assert_eq!(s.db, Path::new("/env.db"));
    assert_eq!(
        snapshot_args(&s).pass.nets.nets(),
        nets(&["203.0.113.0/24", "2001:db8::/32"])
    );

    // Flags over environment.
    let s = parse(&[
        "--config",
        c,
        "--db",
        "/flag.db",
        "snapshot",
        "--local-net",
        "192.0.2.0/24",
        "--prune-after",
        "2",
    ]);
    assert_eq!(s.db, Path::new("/flag.db"));
    let a = snapshot_args(&s);
    assert_eq!(a.pass.nets.nets(), nets(&["192.0.2.0/24"]));
    assert_eq!(a.pass.prune_after, 2);
    std::env::remove_var("NETLEDGER_DB");
    std::env::remove_var("NETLEDGER_LOCAL_NETWORKS");

    // An empty list in the file counts everything.
    std::fs::write(&conf, "local_networks = []\n").unwrap();
    let s = parse(&["--config", c, "snapshot"]);
    assert!(snapshot_args(&s).pass.nets.nets().is_empty());

    // Delegating services: the file, then NETLEDGER_DELEGATING_UIDS / _GRACE, then flags.
    std::fs::write(
        &conf,
        "delegating_uids = [0, 33]\ndelegate_grace = \"20s\"\n",
    )
    .unwrap();
    let delegation = |args: &[&str]| {
        let s = parse(args);
        let a = snapshot_args(&s);
        (
            a.pass.delegating.uids().to_vec(),
            a.pass.delegate_grace.as_secs(),
        )
    };
    assert_eq!(delegation(&["--config", c, "snapshot"]), (vec![0, 33], 20));
    std::env::set_var("NETLEDGER_DELEGATING_UIDS", "7,root");
    std::env::set_var("NETLEDGER_DELEGATE_GRACE", "3s");
    assert_eq!(delegation(&["--config", c, "snapshot"]), (vec![0, 7], 3));
    assert_eq!(
        delegation(&[
            "--config",
            c,
            "snapshot",
            "--delegating-uid",
            "9",
            "--delegate-grace",
            "0s"
        ]),
        (vec![9], 0)
    );
    std::env::remove_var("NETLEDGER_DELEGATING_UIDS");
    std::env::remove_var("NETLEDGER_DELEGATE_GRACE");
}

/// `netledger config` prints the settings in effect as a configuration file that reads
/// back to the same values.
#[test]
fn printed_settings_are_a_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("in.toml");
    std::fs::write(
        &conf,
        "prune_after = 5\ninterval = \"1m\"\n[retention]\nraw = \"2d\"\nhourly = \"30d\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_netledger"))
        .arg("--config")
        .arg(&conf)
        .arg("config")
        .env_remove("NETLEDGER_DB")
        .env_remove("NETLEDGER_LOCAL_NETWORKS")
        .env_remove("NETLEDGER_DELEGATING_UIDS")
        .env_remove("NETLEDGER_DELEGATE_GRACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let c = netledger::config::FileConfig::parse(&text, Path::new("printed")).unwrap();
    assert_eq!(c.prune_after, Some(5));
    assert_eq!(c.interval, Some(std::time::Duration::from_secs(60)));
    assert_eq!(c.lock_timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(c.local_networks.as_ref().map(Vec::len), Some(10));
    let r = c.retention().unwrap();
    assert_eq!(r.raw, std::time::Duration::from_secs(2 * 86_400));
    assert_eq!(r.hourly, std::time::Duration::from_secs(30 * 86_400));
    assert_eq!(r.daily, None);
    // Root, and sshd's privilege-separation user where it exists, resolved to uids.
    let (d, grace) = c.delegation(&[], None).unwrap();
    assert!(d.contains(0));
    assert_eq!(grace, std::time::Duration::from_secs(10));
}

fn netledger_config(conf: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_netledger"));
    c.arg("--config")
        .arg(conf)
        .arg("config")
        .env_remove("NETLEDGER_DB")
        .env_remove("NETLEDGER_LOCAL_NETWORKS")
        .env_remove("NETLEDGER_NAMES");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Every number and duration of the file has a range: out of it is a usage error (exit 2)
/// in one line naming the key, the file and the range.
#[test]
fn out_of_range_keys_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("netledger.toml");
    for (text, want) in [
        ("interval = \"0s\"\n", ["interval", "1s"]),
        ("interval = \"100ms\"\n", ["interval", "1s"]),
        ("prune_after = 0\n", ["prune_after", "1"]),
        ("prune_after = 4000000000\n", ["prune_after", "1000"]),
        ("lock_timeout = \"1year\"\n", ["lock_timeout", "10m"]),
        ("[retention]\nraw = \"1s\"\n", ["retention.raw", "1h"]),
        (
            "[retention]\nhourly_top = 1000000\n",
            ["retention.hourly_top", "0"],
        ),
        (
            "[retention]\nconnections = \"0s\"\n",
            ["retention.connections", "1h"],
        ),
        (
            "[retention]\ndaily = \"1000000years\"\n",
            ["retention.daily", "forever"],
        ),
        ("interval = \"soon\"\n", ["interval", "line 1"]),
        ("prune_after = -1\n", ["prune_after", "line 1"]),
    ] {
        std::fs::write(&conf, text).unwrap();
        let o = netledger_config(&conf, &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{text:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{text:?}: one line: {err}"
        );
        assert!(err.contains(&*conf.to_string_lossy()), "{text:?}: {err}");
        for w in want {
            assert!(err.contains(w), "{text:?}: stderr lacks {w:?}: {err}");
        }
    }
}

/// `config` shows what `snapshot`, `run` and the reports use: the environment over the file.
#[test]
fn config_shows_settings_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("netledger.toml");
    std::fs::write(
        &conf,
        "local_networks = [\"10.0.0.0/8\"]\nnames = \"/file/names\"\n",
    )
    .unwrap();
    let o = netledger_config(
        &conf,
        &[
            ("NETLEDGER_LOCAL_NETWORKS", "198.51.100.0/24,2001:db8::/32"),
            ("NETLEDGER_NAMES", "/env/names"),
            ("NETLEDGER_DB", "/env.db"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let c = netledger::config::FileConfig::parse(&text, Path::new("printed")).unwrap();
    assert_eq!(
        c.local_networks,
        Some(vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap()
        ])
    );
    assert_eq!(c.names.as_deref(), Some(Path::new("/env/names")));
    assert_eq!(c.db.as_deref(), Some(Path::new("/env.db")));
}
