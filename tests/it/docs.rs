//! The documentation stays true. Every `netledger …` command shown in a fenced code block of
//! README.md and docs/*.md parses with the real command line; the read-only ones run, against
//! a database written through the store API, in a network namespace of their own, and exit 0;
//! the commands that need root or change the host (`setup`, `snapshot`, `run`, `quota grant`,
//! a file written by `--output`) are only parsed. Every relative link points at a file, and at
//! a heading of it, that exist; every key of the configuration file is in the operations
//! page's table; the example outputs from the database of tests/it/reports.rs are its
//! snapshots; docs/architecture.md lists the layers of tests/it/layers.rs. (The SQL queries of docs/guide.md run in tests/it/reports.rs.)
//!
//! Fenced blocks marked `text` are synopses and screens (`netledger [--db PATH] top […]`, the
//! live view): their subcommand must exist, nothing more. In other blocks a command is a line,
//! or a part of one between `&&`, `|` and `;`, that starts with `netledger` or
//! `…/netledger`, after an optional `$ ` prompt; `netledger:` lines are output.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use netledger::account::{Kind, PassPlan, Traffic, UsageKey};
use netledger::attribute::Direction;
use netledger::cli::Cli;
use netledger::store::{OpenOptions, PassRecord, Store};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, CHANGELOG.md and every page under docs/, with their text.
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap().display().to_string()
}

/// A line of a page: its number, the info string of the fenced block it is in (None
/// outside one; fence lines themselves are left out), and its text.
fn lines(text: &str) -> Vec<(usize, Option<String>, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                None => Some(info.trim().to_string()),
                Some(_) => None,
            };
            continue;
        }
        out.push((i + 1, fence.clone(), line));
    }
    out
}

/// Shell words of a line, split on unquoted `&&`, `|`, `;`, up to an unquoted `#` comment.
fn shell_parts(line: &str) -> Vec<Vec<String>> {
    let (mut parts, mut words, mut word) = (vec![], vec![], None::<String>);
    let mut chars = line.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut Option<String>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    w.push(q);
                }
            }
            ' ' | '\t' => end_word(&mut words, &mut word),
            '#' if word.is_none() => break,
            '&' | '|' | ';' => {
                if c == '&' && chars.peek() == Some(&'&') {
                    chars.next();
                }
                end_word(&mut words, &mut word);
                parts.push(std::mem::take(&mut words));
            }
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut words, &mut word);
    parts.push(words);
    parts.retain(|p| !p.is_empty());
    parts
}

/// A command a page shows: where, and its arguments after the program name.
struct Shown {
    place: String,
    args: Vec<String>,
}

/// Every command shown in a fenced block that is not `text`, and every synopsis's
/// subcommand (from `text` blocks).
fn shown() -> (Vec<Shown>, Vec<(String, String)>) {
    let (mut commands, mut synopses) = (vec![], vec![]);
    for (path, text) in pages() {
        for (n, fence, line) in lines(&text) {
            let Some(info) = fence else { continue };
            let place = format!("{}:{n}", rel(&path));
            let line = line.trim_start();
            if info == "text" {
                if let Some(rest) = line.strip_prefix("netledger ") {
                    synopses.push((place, subcommand_of_synopsis(rest)));
                }
                continue;
            }
            if !matches!(info.as_str(), "" | "sh" | "bash" | "console" | "shell") {
                continue;
            }
            let line = line.strip_prefix("$ ").unwrap_or(line);
            for mut words in shell_parts(line) {
                if words[0] == "netledger" || words[0].ends_with("/netledger") {
                    words.remove(0);
                    commands.push(Shown {
                        place: place.clone(),
                        args: words,
                    });
                }
            }
        }
    }
    (commands, synopses)
}

/// `[--db PATH] top [--since …]` → `top`: the first word outside brackets, not a flag.
fn subcommand_of_synopsis(rest: &str) -> String {
    let mut depth = 0i32;
    for w in rest.split_whitespace() {
        let before = depth;
        depth += w.matches('[').count() as i32 - w.matches(']').count() as i32;
        if before == 0 && depth == 0 && !w.starts_with('-') {
            return w.to_string();
        }
    }
    String::new()
}

fn subcommand(args: &[String]) -> String {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    args.iter()
        .find(|a| names.contains(a))
        .cloned()
        .unwrap_or_default()
}

/// Commands that change the host or the database, or need the real system: parsed only.
fn only_parsed(args: &[String]) -> bool {
    let sub = subcommand(args);
    matches!(sub.as_str(), "snapshot" | "setup" | "run")
        || (sub == "quota" && args.iter().any(|a| a == "grant"))
        || args
            .iter()
            .any(|a| a == "--output" || a == "--metrics-textfile")
}

#[test]
fn every_command_shown_parses_with_the_real_command_line() {
    let (commands, synopses) = shown();
    assert!(
        commands.len() >= 20,
        "only {} commands found in the docs",
        commands.len()
    );
    let mut bad = vec![];
    for c in &commands {
        let argv = std::iter::once("netledger".to_string()).chain(c.args.iter().cloned());
        if let Err(e) = Cli::try_parse_from(argv) {
            bad.push(format!("{}: netledger {}: {e}", c.place, c.args.join(" ")));
        }
    }
    let cli = Cli::command();
    for (place, sub) in &synopses {
        if cli.find_subcommand(sub).is_none() {
            bad.push(format!("{place}: no subcommand {sub:?} in this synopsis"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // Every subcommand is shown at least once, as a command or a synopsis.
    let seen: Vec<String> = commands
        .iter()
        .map(|c| subcommand(&c.args))
        .chain(synopses.iter().map(|s| s.1.clone()))
        .collect();
    for sub in cli.get_subcommands().map(|c| c.get_name()) {
        if sub != "help" {
            assert!(
                seen.iter().any(|s| s == sub),
                "no page shows `netledger {sub}`"
            );
        }
    }
}

/// A database with a little of everything: two users' traffic an hour ago and in November
/// 2026 (the month the docs' examples are from), unattributed and excluded rows, and a
/// Slurm job's (4242, the docs' `netledger job` examples).
fn build_db(dir: &Path) -> PathBuf {
    let db = dir.join("docs.db");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let key = |kind, uid, program: Option<&str>, remote| UsageKey {
        cgroup: None,
        kind,
        uid,
        program: program.map(String::from),
        reason: None,
        via: None,
        container: None,
        protocol: 6,
        direction: Some(Direction::Out),
        remote: ip(remote),
        port: 443,
    };
    let t = |rx, tx| Traffic {
        rx_bytes: rx,
        tx_bytes: tx,
        rx_packets: 10,
        tx_packets: 10,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for ts in [1_795_132_800, now - 3600] {
        let mut usage = BTreeMap::new();
        usage.insert(
            key(Kind::User, Some(1001), Some("firefox"), "198.51.100.2"),
            t(3_000_000, 20_000),
        );
        usage.insert(
            key(Kind::User, Some(1002), Some("curl"), "2001:db8::2"),
            t(10_000, 500_000),
        );
        let mut unattributed = key(Kind::Unattributed, None, None, "203.0.113.50");
        unattributed.reason = Some(netledger::attribute::Reason::NoSocket);
        usage.insert(unattributed, t(70_000, 7_000));
        usage.insert(
            key(Kind::Excluded, Some(1001), None, "10.0.0.5"),
            t(1_000, 1_000),
        );
        let job = UsageKey {
            cgroup: Some(netledger::attribute::Cgroup {
                path: "/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0".into(),
                job: Some(4242),
            }),
            ..key(Kind::User, Some(1001), Some("python3"), "198.51.100.7")
        };
        usage.insert(job, t(40_000, 900_000));
        let plan = PassPlan {
            usage,
            ..PassPlan::default()
        };
        let rec = PassRecord {
            started_at: ts,
            mode: "snapshot",
            ..PassRecord::default()
        };
        let names = [(1001, Some("alice".into())), (1002, Some("bob".into()))];
        store.write_pass(&rec, &plan, &names).unwrap();
    }
    db
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Each read-only command shown runs against a built database, in a network namespace of
/// its own (so `live`, `connections`, `log` and `summary` read an empty conntrack table,
/// never the host's), and exits 0.
#[test]
fn read_only_commands_shown_run_and_exit_0() {
    if !is_root() {
        eprintln!("skipped: needs root (a network namespace of its own)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    // A quota for `quota` and `check` to judge; the rest is the defaults.
    let config = dir.path().join("netledger.toml");
    std::fs::write(&config, "[quota]\ndefault = \"100GiB\"\n").unwrap();
    let (commands, _) = shown();
    let (mut ran, mut bad) = (0, vec![]);
    for c in commands.iter().filter(|c| !only_parsed(&c.args)) {
        // `live` needs accounting on: set in the namespace this command runs in, not the host.
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--", "sh", "-c"])
            .arg("sysctl -qw net.netfilter.nf_conntrack_acct=1 && exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_netledger"))
            .arg("--db")
            .arg(&db)
            .args(&c.args);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("NETLEDGER_")) {
            cmd.env_remove(k);
        }
        cmd.env("TZ", "UTC").env("NETLEDGER_CONFIG", &config);
        let out = cmd.output().expect("unshare");
        ran += 1;
        if !out.status.success() {
            bad.push(format!(
                "{}: netledger {}: {}\n{}",
                c.place,
                c.args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(ran >= 15, "only {ran} commands ran");
}

/// GitHub's anchor of a heading: lower case, letters, digits, `-` and `_` kept, spaces to
/// `-`, the rest dropped; a repeated one gets `-1`, `-2`, ….
fn anchors(text: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for (_, fence, line) in lines(text) {
        if fence.is_some() {
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = out
            .iter()
            .filter(|a| *a == &slug || a.starts_with(&format!("{slug}-")))
            .count();
        out.push(if n == 0 { slug } else { format!("{slug}-{n}") });
    }
    out
}

/// `[text](target)` links of a line, outside inline code.
fn links(line: &str) -> Vec<String> {
    let mut out = vec![];
    let no_code: String = line
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(" ");
    let mut rest = no_code.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let end = after.find(')').unwrap_or(after.len());
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

#[test]
fn every_relative_link_points_at_a_file_and_heading() {
    let mut bad = vec![];
    let mut checked = 0;
    for (path, text) in pages() {
        for (n, fence, line) in lines(&text) {
            if fence.is_some() {
                continue;
            }
            for target in links(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target.as_str(), None),
                };
                let file = if file.is_empty() {
                    path.clone()
                } else {
                    path.parent().unwrap().join(file)
                };
                let place = format!("{}:{n}: {target}", rel(&path));
                if !file.exists() {
                    bad.push(format!("{place}: no such file"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let text = std::fs::read_to_string(&file).unwrap_or_default();
                    if !anchors(&text).iter().any(|a| a == anchor) {
                        bad.push(format!("{place}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert!(checked >= 20, "only {checked} links found");
}

#[test]
fn anchors_are_githubs() {
    let text = "# A b\n## Owner mark (exact under churn)\n```\n# not a heading\n```\n## A b\n## What's new — 2026\n";
    assert_eq!(
        anchors(text),
        [
            "a-b",
            "owner-mark-exact-under-churn",
            "a-b-1",
            "whats-new--2026"
        ]
    );
}

#[test]
fn shell_parts_split_commands_and_keep_quotes() {
    assert_eq!(
        shell_parts("a && ./x/netledger top --format 'x | y' | grep z # c"),
        [
            vec!["a".to_string()],
            vec![
                "./x/netledger".into(),
                "top".into(),
                "--format".into(),
                "x | y".into()
            ],
            vec!["grep".into(), "z".into()],
        ]
    );
}

/// Every key of the documented configuration file (contrib/netledger.toml, what `config
/// --default` prints) is in the table of docs/operations.md's "Configuration".
#[test]
fn every_configuration_key_is_in_the_operations_page() {
    let file = std::fs::read_to_string(root().join("contrib/netledger.toml")).unwrap();
    let ops = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let section = ops
        .split("\n## Configuration\n")
        .nth(1)
        .expect("docs/operations.md has a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    let mut table = String::new();
    let mut missing = vec![];
    for line in file.lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with('[') && line.ends_with(']') {
            table = line.to_string();
            if !section.contains(&format!("`{line}`")) {
                missing.push(line.to_string());
            }
            continue;
        }
        // Entries of [quota.users] and [quota.groups] are names, not keys.
        if table.starts_with("[quota.") {
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !section.contains(&format!("`{key}`"))
        {
            missing.push(format!("{table} {key}"));
        }
    }
    assert!(missing.is_empty(), "not in Configuration: {missing:?}");
}

/// The example outputs shown from the databases of tests/it/reports.rs and
/// tests/it/cgroup_reports.rs are what those tests' snapshots hold: a page's `$ netledger …` line, then its output up to the next `$ ` line
/// or the end of the block.
#[test]
fn example_outputs_equal_the_reports_snapshots() {
    const EXAMPLES: &[(&str, &str)] = &[
        (
            "$ netledger top --since 2026-11-01 --until 2026-12-01 --utc",
            "it__reports__top_by_user.snap",
        ),
        (
            "$ netledger top --by port --since 2026-11-01 --until 2026-12-01 --utc",
            "it__reports__top_by_port.snap",
        ),
        (
            "$ netledger report --period day --since 2026-11-01 --until 2026-12-01 --utc",
            "it__reports__report_day.snap",
        ),
        (
            "$ netledger job 4242 --since 2026-11-01 --until 2026-12-01 --utc",
            "it__cgroup_reports__job_4242.snap",
        ),
    ];
    let mut shown = 0;
    for (path, text) in pages() {
        let lines = lines(&text);
        for (i, (n, fence, line)) in lines.iter().enumerate() {
            let Some(&(_, snap)) = EXAMPLES.iter().find(|e| e.0 == *line) else {
                continue;
            };
            assert!(fence.is_some(), "{}:{n}: outside a code block", rel(&path));
            // Lines in a row (a fence line, left out, breaks the run) up to the next prompt.
            let output: Vec<&str> = lines[i + 1..]
                .iter()
                .zip(n + 1..)
                .take_while(|((m, _, l), want)| m == want && !l.starts_with("$ "))
                .map(|((_, _, l), _)| *l)
                .collect();
            let snap =
                std::fs::read_to_string(root().join("tests/it/snapshots").join(snap)).unwrap();
            // After the snapshot's header: `---`, metadata, `---`.
            let body: Vec<&str> = snap
                .lines()
                .skip_while(|l| *l != "---")
                .skip(1)
                .skip_while(|l| *l != "---")
                .skip(1)
                .collect();
            assert_eq!(output, body, "{}:{n}: {line}", rel(&path));
            shown += 1;
        }
    }
    assert!(shown >= 4, "only {shown} example outputs found");
}

/// The layers docs/architecture.md lists are `LAYERS` of tests/it/layers.rs, in its order.
#[test]
fn architecture_lists_the_layers_of_the_layer_test() {
    let quoted = |s: &str| -> Vec<String> {
        s.split(['"', '`'])
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    };
    let test = std::fs::read_to_string(root().join("tests/it/layers.rs")).unwrap();
    let block = test
        .split("const LAYERS: &[&[&str]] = &[")
        .nth(1)
        .expect("tests/it/layers.rs has LAYERS")
        .split("\n];")
        .next()
        .unwrap();
    let layers: Vec<Vec<String>> = block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("&["))
        .map(quoted)
        .collect();
    let page = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let listed: Vec<Vec<String>> = page
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | N | `a`, `b` | what it is |
            (cells.len() > 3 && cells[1].parse::<u32>().is_ok()).then(|| quoted(cells[2]))
        })
        .collect();
    assert!(layers.len() > 10, "LAYERS not read: {layers:?}");
    assert_eq!(listed, layers, "docs/architecture.md's layer table");
}
