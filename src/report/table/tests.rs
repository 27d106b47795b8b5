use super::*;

/// Issue 24: a cell holding control characters stays on its line, escaped, and the
/// columns are as wide as what is shown.
#[test]
fn cells_are_made_safe_for_a_terminal() {
    let mut t = Table::new(vec!["PROGRAM".into(), "RX".into()], 1);
    t.push(vec!["a\x1b[31m\nb".into(), "1".into()]);
    assert_eq!(t.render(), "PROGRAM     RX\na\\e[31m\\nb   1\n");
}

/// A line as [`line`] wrote it before it appended to a buffer: `format!` per cell.
fn formatted_line(cells: &[String], widths: &[usize], text_cols: usize) -> String {
    let mut s = String::new();
    for (c, (cell, &w)) in cells.iter().zip(widths).enumerate() {
        if c < text_cols {
            s.push_str(&format!("{cell:<w$}  "));
        } else {
            s.push_str(&format!("{cell:>w$}  "));
        }
    }
    let mut s = s.trim_end().to_string();
    s.push('\n');
    s
}

/// `report`'s table as it was rendered before its widths were counted (issue 26):
/// every row's cells formatted and measured, then formatted again and written.
fn formatted_period_table(rows: &[PeriodRow], exact: bool) -> String {
    let cells = |r: &PeriodRow, period: String, max: u64| -> Vec<String> {
        let mut line = vec![period, who(r.uid, r.user.as_deref(), None)];
        line.extend(traffic_cells(&r.traffic, exact));
        line.push(bar(r.traffic.bytes(), max.max(r.traffic.bytes())));
        line.into_iter().map(safe).collect()
    };
    let header = PeriodTable::HEADER.map(String::from);
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    let (mut total, mut max) = (Traffic::default(), 0);
    for r in rows {
        total.add(&r.traffic);
        max = max.max(r.traffic.bytes());
        widen(&mut widths, &cells(r, r.period.clone(), max));
    }
    let mut foot = vec!["total".to_string(), String::new()];
    foot.extend(traffic_cells(&total, exact));
    foot.push(String::new());
    widen(&mut widths, &foot);
    let mut out = formatted_line(&header, &widths, 2);
    let mut last: Option<&str> = None;
    for r in rows {
        let period = match last == Some(r.period.as_str()) {
            true => String::new(),
            false => r.period.clone(),
        };
        last = Some(&r.period);
        out.push_str(&formatted_line(&cells(r, period, max), &widths, 2));
    }
    out + &rule(&widths) + &formatted_line(&foot, &widths, 2)
}

/// Random `report` rows, `cases` tables of them: names and periods that need
/// escaping or are wider than ASCII, unknown users, the unattributed, no bytes, and
/// byte counts at every unit's edges (where one decimal rounds up to another digit).
fn random_period_tables(cases: usize) -> Vec<Vec<PeriodRow>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut below = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let names = [
        "alice",
        "b\x1b[31mob",
        "名前",
        "x\u{202e}y",
        "d\\e",
        "",
        "é\n",
    ];
    let periods = ["2026-11-21", "2026-11-22 14", "2026-11\t", "週", ""];
    let edges = [
        0u64,
        1,
        999,
        1023,
        1024,
        10_189,
        10_240,
        102_348,
        1_048_063,
        1 << 40,
    ];
    let mut tables = vec![];
    for _ in 0..cases {
        let mut rows = vec![];
        let mut period = 0;
        for _ in 0..below(40) {
            period = (period + below(2) as usize) % periods.len();
            let uid = match below(6) {
                0 => None,
                1 => Some(below(5) as u32),
                _ => Some(u32::MAX - below(3_000_000_000) as u32),
            };
            let user = match (uid, below(4)) {
                (Some(_), 0) => None,
                (_, _) => Some(names[below(names.len() as u64) as usize].to_string()),
            };
            let mut amount = || match below(3) {
                0 => edges[below(edges.len() as u64) as usize],
                1 => {
                    let bits = below(50) + 1;
                    below(1 << bits)
                }
                _ => {
                    let e = edges[below(edges.len() as u64) as usize];
                    let scaled = (e as f64 * 1024f64.powi(below(4) as i32)) as u64;
                    // Small enough that a table's total fits in a u64.
                    scaled.min(1 << 52).saturating_sub(below(3))
                }
            };
            let traffic = Traffic {
                rx_bytes: amount(),
                tx_bytes: amount(),
                rx_packets: below(10),
                tx_packets: 0,
            };
            rows.push(PeriodRow {
                period: periods[period].to_string(),
                uid,
                user,
                traffic,
            });
        }
        tables.push(rows);
    }
    tables
}

/// The table written from counted widths is the formatted one to the byte.
#[test]
fn a_period_table_from_counted_widths_is_the_formatted_one() {
    for (case, rows) in random_period_tables(300).iter().enumerate() {
        for exact in [false, true] {
            assert_eq!(
                period_table(rows, exact),
                formatted_period_table(rows, exact),
                "case {case}, exact {exact}"
            );
        }
    }
}

/// The kept rows formatted two chunks at a time on two threads are the table's rows
/// formatted one after the other, whatever the chunks' size.
#[test]
fn kept_rows_formatted_in_chunks_on_two_threads_are_the_rows_in_turn() {
    for rows in random_period_tables(50) {
        let whole = period_table(&rows, false);
        for chunk_rows in [1, 2, 3, 7, rows.len().max(1)] {
            let mut t = PeriodTable::new(false);
            rows.iter().for_each(|r| t.measure(r));
            let mut out = t.head().into_bytes();
            write_kept(&mut out, &t, &rows, chunk_rows).unwrap();
            out.extend(t.foot().into_bytes());
            let n = rows.len();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                whole,
                "{n} rows by {chunk_rows}"
            );
        }
    }
}

/// The table written from the rows kept as they were measured, and from a second read
/// when they do not fit, is [`period_table`] of the rows after the first line.
#[test]
fn a_period_table_is_read_once_while_its_rows_fit_and_twice_past_that() {
    for rows in random_period_tables(50).iter().filter(|r| r.len() > 2) {
        let whole = format!("first\n{}", period_table(rows, false));
        let one = size_of::<PeriodRow>() + 64;
        for (kept_bytes, reads) in [(usize::MAX, 1), (one * rows.len(), 1), (one, 2), (0, 2)] {
            let (mut out, mut read) = (vec![], 0);
            write_period_table(&mut out, "first\n", false, kept_bytes, |f| {
                read += 1;
                rows.iter().try_for_each(|r| f(r.clone()))
            })
            .map_err(|e: std::io::Error| e)
            .unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), whole, "kept {kept_bytes}");
            assert_eq!(read, reads, "kept {kept_bytes}, {} rows", rows.len());
        }
    }
}

fn row(uid: u32, user: &str, via: Option<(u32, &str)>, reason: Option<&str>, rx: u64) -> TopRow {
    TopRow {
        uid: Some(uid),
        user: Some(user.into()),
        program: None,
        remote: None,
        protocol: None,
        port: None,
        reason: reason.map(Into::into),
        via: via.map(|v| v.0),
        via_user: via.map(|v| v.1.into()),
        container: None,
        cgroup: None,
        unit: None,
        job: None,
        traffic: Traffic {
            rx_bytes: rx,
            ..Traffic::default()
        },
    }
}

#[test]
fn top_by_container_has_a_container_column_and_key() {
    let mut docker = row(1001, "alice", None, None, 3000);
    docker.container = Some("docker-3f2a".into());
    let report = TopReport {
        rows: vec![docker, row(1001, "alice", None, None, 20)],
        ..TopReport::default()
    };
    let by = [By::Container];
    let t = top_table(&report, &by, &Labels::default(), true);
    let cells: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(cells[0], ["USER", "CONTAINER", "RX", "TX", "TOTAL"], "{t}");
    assert_eq!(cells[1][2], "docker-3f2a", "{t}");
    // The host's own traffic.
    assert_eq!(cells[2][2], "-", "{t}");
    let json: Vec<_> = report
        .rows
        .iter()
        .map(|r| crate::report::top_record(r, &by, &Labels::default()))
        .collect();
    assert_eq!(json[0]["container"], "docker-3f2a");
    assert!(json[1]["container"].is_null());
    // Only with --by container.
    let plain = crate::report::top_record(&report.rows[0], &[], &Labels::default());
    assert!(!plain.contains_key("container"));
}

#[test]
fn top_by_cgroup_unit_and_job_have_columns_and_keys_null_where_none() {
    let mut job = row(1001, "alice", None, None, 3000);
    job.cgroup = Some("/system.slice/slurmstepd.scope/job_42/step_0/user/task_0".into());
    job.unit = Some("slurmstepd.scope".into());
    job.job = Some(42);
    let report = TopReport {
        rows: vec![job, row(1002, "bob", None, None, 20)],
        ..TopReport::default()
    };
    let by = [By::Cgroup, By::Unit, By::Job];
    let t = top_table(&report, &by, &Labels::default(), true);
    let cells: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        cells[0],
        ["USER", "CGROUP", "UNIT", "JOB", "RX", "TX", "TOTAL"],
        "{t}"
    );
    assert_eq!(
        cells[1][2..5],
        [
            "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0",
            "slurmstepd.scope",
            "42"
        ],
        "{t}"
    );
    assert_eq!(cells[2][2..5], ["-", "-", "-"], "{t}");
    let json: Vec<_> = report
        .rows
        .iter()
        .map(|r| crate::report::top_record(r, &by, &Labels::default()))
        .collect();
    assert_eq!(json[0]["unit"], "slurmstepd.scope");
    assert_eq!(json[0]["job"], 42);
    for key in ["cgroup", "unit", "job"] {
        assert!(json[1][key].is_null(), "{key}: {:?}", json[1]);
    }
    let plain = crate::report::top_record(&report.rows[0], &[By::Unit], &Labels::default());
    assert!(plain.contains_key("unit"));
    assert!(!plain.contains_key("cgroup") && !plain.contains_key("job"));
}

#[test]
fn top_by_via_names_the_service_and_the_ambiguous() {
    let report = TopReport {
        rows: vec![
            row(1001, "alice", Some((0, "root")), None, 3000),
            row(1001, "alice", None, None, 20),
            row(0, "root", None, Some("ambiguous-holders"), 10),
        ],
        ..TopReport::default()
    };
    let t = top_table(&report, &[By::Via], &Labels::default(), true);
    let cells: Vec<Vec<&str>> = t
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(cells[0], ["USER", "VIA", "RX", "TX", "TOTAL"], "{t}");
    assert_eq!(
        cells[1],
        ["alice (1001)", "root (0)", "3000", "0", "3000"],
        "{t}"
    );
    assert_eq!(cells[2], ["alice (1001)", "-", "20", "0", "20"], "{t}");
    assert_eq!(
        cells[3],
        ["root (0)", "(ambiguous-holders)", "10", "0", "10"],
        "{t}"
    );
}
