//! Aligned text tables with human units, totals, and vnStat-like bars.

use super::names::protocol_name;
use super::{human_bytes, terminal_safe, Labels};
use crate::account::Traffic;
use crate::store::query::{By, Covered, PeriodRow, TopReport, TopRow};
use crate::units::{digits, human_bytes_width, write_human_bytes};
use std::borrow::Cow;

/// The first line of a report's table: the span its numbers cover, in local time unless
/// `utc`, and, when that is wider than the period asked for, why (usage is stored in whole
/// buckets, and a bucket the period overlaps is counted whole).
pub fn covered_line(c: &Covered, utc: bool) -> String {
    let at = |t: i64| {
        let fmt = "%Y-%m-%d %H:%M:%S%:z";
        match chrono::DateTime::from_timestamp(t, 0) {
            Some(d) if utc => d.format(fmt).to_string(),
            Some(d) => d.with_timezone(&chrono::Local).format(fmt).to_string(),
            None => t.to_string(),
        }
    };
    let unit = |w: i64| match w {
        300 => "5-minute buckets",
        3600 => "hours",
        86400 => "days",
        _ => "buckets",
    };
    let mut units: Vec<&str> = [c.since_step, c.until_step]
        .into_iter()
        .flatten()
        .map(unit)
        .collect();
    units.dedup();
    let moved_since = c.since_step.is_some() || c.keys_from.is_some();
    let asked = match (moved_since, c.until_step) {
        (true, Some(_)) => format!("from {} to {}", at(c.asked_since), at(c.asked_until)),
        (true, None) => format!("from {}", at(c.asked_since)),
        (false, Some(_)) => format!("to {}", at(c.asked_until)),
        (false, None) => String::new(),
    };
    let mut reasons = vec![];
    if !units.is_empty() {
        reasons.push(format!("usage is stored in whole {}", units.join(" and ")));
    }
    if c.keys_from.is_some() {
        reasons.push(
            "older usage is kept per user only, without programs, remotes, ports or cgroups".into(),
        );
    }
    let why = match reasons.is_empty() {
        true => String::new(),
        false => format!(" ({}; asked {asked})", reasons.join("; ")),
    };
    format!("usage from {} to {}{why}\n", at(c.since), at(c.until))
}

/// Width of the bar column of `report`.
const BAR_WIDTH: usize = 24;

/// The one table renderer of every report (`top`, `report`, `connections`, `summary`): a
/// header line, then rows, columns two spaces apart, each as wide as its widest cell (in
/// characters); the leading `text_cols` columns are left-aligned, the rest (numbers)
/// right-aligned; a line's trailing blanks are trimmed; a rule of `-` as wide as the
/// table may precede a row.
pub struct Table {
    rows: Vec<Vec<String>>,
    /// Row indexes before which a rule is drawn.
    rules: Vec<usize>,
    /// Number of leading left-aligned columns.
    text_cols: usize,
}

impl Table {
    /// A table with this header; the first `text_cols` columns are text.
    pub fn new(header: Vec<String>, text_cols: usize) -> Table {
        Table {
            rows: vec![header],
            rules: vec![],
            text_cols,
        }
    }

    /// Add a row. Every cell is made safe for a terminal ([`terminal_safe`]): the tables
    /// show names users chose (programs, containers).
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row.into_iter().map(safe).collect());
    }

    /// Draw a rule before the next row.
    pub fn rule(&mut self) {
        self.rules.push(self.rows.len());
    }

    /// The table as text, one `\n`-terminated line per row and rule.
    pub fn render(&self) -> String {
        let mut widths = vec![0; self.rows[0].len()];
        for r in &self.rows {
            widen(&mut widths, r);
        }
        let mut out = String::new();
        for (i, r) in self.rows.iter().enumerate() {
            if self.rules.contains(&i) {
                out.push_str(&rule(&widths));
            }
            out.push_str(&line(r, &widths, self.text_cols));
        }
        out
    }
}

/// A cell made safe for a terminal ([`terminal_safe`]).
fn safe(c: String) -> String {
    match terminal_safe(&c) {
        Cow::Borrowed(_) => c,
        Cow::Owned(safe) => safe,
    }
}

/// Widen `widths` to the cells of a row (in characters).
fn widen(widths: &mut [usize], row: &[String]) {
    for (w, cell) in widths.iter_mut().zip(row) {
        *w = (*w).max(cell.chars().count());
    }
}

/// A rule of `-` as wide as a table of these column widths.
fn rule(widths: &[usize]) -> String {
    let width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    let mut s = "-".repeat(width);
    s.push('\n');
    s
}

/// One line of a table: cells two spaces apart, the first `text_cols` left-aligned, the
/// rest right-aligned, trailing blanks trimmed.
fn line(cells: &[String], widths: &[usize], text_cols: usize) -> String {
    let mut s = String::new();
    push_line(&mut s, cells.iter().map(String::as_str), widths, text_cols);
    s
}

/// [`line`] appended to `out`, without a string for each cell.
fn push_line<'a>(
    out: &mut String,
    cells: impl Iterator<Item = &'a str>,
    widths: &[usize],
    text_cols: usize,
) {
    let start = out.len();
    for (c, (cell, &w)) in cells.zip(widths).enumerate() {
        // As `format!("{cell:<w$}")` pads: to `w` characters.
        let pad = w.saturating_sub(cell.chars().count());
        if c < text_cols {
            out.push_str(cell);
            push_blanks(out, pad);
        } else {
            push_blanks(out, pad);
            out.push_str(cell);
        }
        out.push_str("  ");
    }
    let kept = out[start..].trim_end().len();
    out.truncate(start + kept);
    out.push('\n');
}

/// `n` blanks appended to `out`.
fn push_blanks(out: &mut String, mut n: usize) {
    const BLANKS: &str = "                                ";
    while n > 0 {
        let k = n.min(BLANKS.len());
        out.push_str(&BLANKS[..k]);
        n -= k;
    }
}

/// A byte count: exact with `exact` (`--bytes`), else in binary units.
pub fn amount(n: u64, exact: bool) -> String {
    if exact {
        n.to_string()
    } else {
        human_bytes(n)
    }
}

/// [`amount`] appended to `out`.
fn write_amount(out: &mut String, n: u64, exact: bool) {
    use std::fmt::Write;
    let written = match exact {
        true => out.write_str(itoa::Buffer::new().format(n)),
        false => write_human_bytes(out, n),
    };
    written.expect("a String takes any text");
}

fn who(uid: Option<u32>, user: Option<&str>, reason: Option<&str>) -> String {
    let mut s = String::new();
    write_who(&mut s, uid, user, reason);
    s
}

/// [`who`] appended to `out`.
fn write_who(out: &mut String, uid: Option<u32>, user: Option<&str>, reason: Option<&str>) {
    use std::fmt::Write;
    let written = match (uid, user) {
        (Some(uid), Some(name)) => {
            out.push_str(name);
            out.push_str(" (");
            out.push_str(itoa::Buffer::new().format(uid));
            out.push(')');
            Ok(())
        }
        (Some(uid), None) => {
            out.push_str(itoa::Buffer::new().format(uid));
            Ok(())
        }
        (None, _) => match reason {
            Some(r) => write!(out, "(unattributed: {r})"),
            None => write!(out, "(unattributed)"),
        },
    };
    written.expect("a String takes any text");
}

/// How a table shows the program, remote and port of rolled-up rows that did not keep
/// them (an hour's smaller keys, a day's detail): program '', remote '', protocol 0.
const OTHER: &str = "(other)";

fn key_cells(row: &TopRow, by: &[By], labels: &Labels) -> Vec<String> {
    let mut out = Vec::new();
    if by.contains(&By::Program) {
        out.push(match row.program.as_deref() {
            None => "?".into(),
            Some("") => OTHER.into(),
            Some(p) => p.into(),
        });
    }
    if by.contains(&By::Remote) {
        let addr = row.remote.clone().unwrap_or_default();
        // '' is the rolled-up remainder: an hour's smaller remotes, or a day's remotes.
        if addr.is_empty() {
            out.push(OTHER.into());
        } else {
            out.push(match labels.remotes.name(&addr) {
                Some(name) => format!("{name} ({addr})"),
                None => addr,
            });
        }
    }
    if by.contains(&By::Port) {
        let (p, port) = (row.protocol.unwrap_or(0), row.port.unwrap_or(0));
        out.push(if p == 0 {
            OTHER.into()
        } else {
            let base = format!("{}/{port}", protocol_name(p));
            match labels.services.name(p, port) {
                Some(s) => format!("{base} {s}"),
                None => base,
            }
        });
    }
    if by.contains(&By::Via) {
        out.push(match (row.via, row.via_user.as_deref(), row.uid) {
            (Some(uid), name, _) => who(Some(uid), name, None),
            // Charged to a service's own uid although users' processes held its socket.
            (None, _, Some(_)) if row.reason.is_some() => {
                format!("({})", row.reason.as_deref().unwrap_or_default())
            }
            (None, _, _) => "-".into(),
        });
    }
    if by.contains(&By::Container) {
        out.push(row.container.clone().unwrap_or_else(|| "-".into()));
    }
    if by.contains(&By::Cgroup) {
        out.push(row.cgroup.clone().unwrap_or_else(|| "-".into()));
    }
    if by.contains(&By::Unit) {
        out.push(row.unit.clone().unwrap_or_else(|| "-".into()));
    }
    if by.contains(&By::Job) {
        out.push(row.job.map_or_else(|| "-".into(), |j| j.to_string()));
    }
    out
}

fn traffic_cells(t: &Traffic, exact: bool) -> [String; 3] {
    [
        amount(t.rx_bytes, exact),
        amount(t.tx_bytes, exact),
        amount(t.bytes(), exact),
    ]
}

/// Render `top`: rows biggest first, then the period's total, its unattributed part, and
/// the excluded local traffic, so the numbers reconcile.
pub fn top_table(report: &TopReport, by: &[By], labels: &Labels, exact: bool) -> String {
    let mut header = vec!["USER".to_string()];
    for (b, title) in [
        (By::Program, "PROGRAM"),
        (By::Remote, "REMOTE"),
        (By::Port, "PORT"),
        (By::Via, "VIA"),
        (By::Container, "CONTAINER"),
        (By::Cgroup, "CGROUP"),
        (By::Unit, "UNIT"),
        (By::Job, "JOB"),
    ] {
        if by.contains(&b) {
            header.push(title.to_string());
        }
    }
    let text_cols = header.len();
    header.extend(["RX", "TX", "TOTAL"].map(String::from));
    let mut t = Table::new(header, text_cols);
    for r in &report.rows {
        let mut line = vec![who(r.uid, r.user.as_deref(), r.reason.as_deref())];
        line.extend(key_cells(r, by, labels));
        line.extend(traffic_cells(&r.traffic, exact));
        t.push(line);
    }
    t.rule();
    let pad = text_cols - 1;
    for (label, traffic) in [
        ("total", &report.total),
        ("  unattributed", &report.unattributed),
        ("excluded local", &report.excluded),
    ] {
        let mut line = vec![label.to_string()];
        line.extend(std::iter::repeat_n(String::new(), pad));
        line.extend(traffic_cells(traffic, exact));
        t.push(line);
    }
    t.render()
}

/// Render `report`: one line per period and user, a bar scaled to the biggest line, and
/// a total.
pub fn period_table(rows: &[PeriodRow], exact: bool) -> String {
    let mut t = PeriodTable::new(exact);
    rows.iter().for_each(|r| t.measure(r));
    let mut out = t.head();
    for r in rows {
        out.push_str(t.row(r));
    }
    out.push_str(&t.foot());
    out
}

/// [`period_table`] after a `first` line, written to `out`, of the rows `read` gives to
/// its argument (each call reads them all, in the same order). Every row is measured
/// before the first is written: they are kept as they are measured while they take at
/// most `kept_bytes`; a table with more is read twice, in memory that does not grow
/// with them.
pub fn write_period_table<E: From<std::io::Error>>(
    out: &mut impl std::io::Write,
    first: &str,
    exact: bool,
    kept_bytes: usize,
    mut read: impl FnMut(&mut dyn FnMut(PeriodRow) -> Result<(), E>) -> Result<(), E>,
) -> Result<(), E> {
    let mut t = PeriodTable::new(exact);
    let (mut kept, mut bytes) = (Some(vec![]), 0);
    read(&mut |r| {
        t.measure(&r);
        let names = r.period.capacity() + r.user.as_ref().map_or(0, String::capacity);
        bytes += size_of::<PeriodRow>() + names;
        match kept.as_mut() {
            Some(rows) if bytes <= kept_bytes => rows.push(r),
            _ => kept = None,
        }
        Ok(())
    })?;
    out.write_all(first.as_bytes())?;
    out.write_all(t.head().as_bytes())?;
    match kept {
        Some(rows) => write_kept(out, &t, &rows, CHUNK_ROWS)?,
        None => read(&mut |r| Ok(out.write_all(t.row(&r).as_bytes())?))?,
    }
    out.write_all(t.foot().as_bytes())?;
    Ok(())
}

/// Rows formatted a chunk at a time on each thread of [`write_kept`].
const CHUNK_ROWS: usize = 8192;

/// The lines of the kept `rows` of a measured table, in order: two chunks of
/// `chunk_rows` at a time formatted at once, on this thread and another (formatting is
/// most of a long table's time), each starting from the period of the row before it, so
/// the text is that of formatting them one after the other.
fn write_kept(
    out: &mut impl std::io::Write,
    t: &PeriodTable,
    rows: &[PeriodRow],
    chunk_rows: usize,
) -> std::io::Result<()> {
    let lines = |before: Option<&PeriodRow>, chunk: &[PeriodRow]| -> String {
        let mut t = t.clone();
        t.last = before.map(|r| r.period.clone());
        let mut text = String::new();
        for r in chunk {
            text.push_str(t.row(r));
        }
        text
    };
    let mut at = 0;
    while at < rows.len() {
        let mid = (at + chunk_rows).min(rows.len());
        let end = (mid + chunk_rows).min(rows.len());
        let (first, second) = std::thread::scope(|s| {
            let second =
                (mid < end).then(|| s.spawn(|| lines(Some(&rows[mid - 1]), &rows[mid..end])));
            let first = lines(at.checked_sub(1).map(|i| &rows[i]), &rows[at..mid]);
            (
                first,
                second.map(|h| h.join().expect("formatting a line does not panic")),
            )
        });
        out.write_all(first.as_bytes())?;
        out.write_all(second.unwrap_or_default().as_bytes())?;
        at = end;
    }
    Ok(())
}

/// [`period_table`] written as the rows are read, in memory that does not grow with them:
/// [`PeriodTable::measure`] every row (the columns' widths, the biggest line, the total),
/// then [`PeriodTable::head`], [`PeriodTable::row`] for each row again in the same order,
/// and [`PeriodTable::foot`]. The same text as rendering them all at once. Measuring
/// formats nothing (issue 26: a year of days is 66,000 rows): the widths are counted from
/// the numbers and names.
#[derive(Clone)]
pub struct PeriodTable {
    exact: bool,
    widths: [usize; 6],
    max: u64,
    total: Traffic,
    /// The period of the last row written (a period is named on its first row only).
    last: Option<String>,
    /// The cells of the row being written, and its line: reused from row to row.
    cells: [String; 6],
    line: String,
}

impl PeriodTable {
    const HEADER: [&'static str; 6] = ["PERIOD", "USER", "RX", "TX", "TOTAL", ""];

    /// A table in binary units, or exact bytes with `exact`.
    pub fn new(exact: bool) -> PeriodTable {
        PeriodTable {
            exact,
            widths: Self::HEADER.map(|h| h.chars().count()),
            max: 0,
            total: Traffic::default(),
            last: None,
            cells: Default::default(),
            line: String::new(),
        }
    }

    fn total_cells(&self) -> Vec<String> {
        let mut line = vec!["total".to_string(), String::new()];
        line.extend(traffic_cells(&self.total, self.exact));
        line.push(String::new());
        line
    }

    /// The width of a byte count's cell.
    fn amount_width(&self, n: u64) -> usize {
        match self.exact {
            true => digits(n),
            false => human_bytes_width(n),
        }
    }

    /// First pass: one row.
    pub fn measure(&mut self, r: &PeriodRow) {
        let t = &r.traffic;
        self.total.add(t);
        self.max = self.max.max(t.bytes());
        let who = match (r.uid, r.user.as_deref()) {
            // The uid and its brackets need no escaping.
            (Some(uid), Some(name)) => terminal_safe(name).chars().count() + 3 + digits(uid.into()),
            (Some(uid), None) => digits(uid.into()),
            (None, _) => who(None, None, None).len(),
        };
        // Every bar is padded to one width (or empty for no bytes), whatever the biggest.
        let bar = if t.bytes() > 0 { BAR_WIDTH } else { 0 };
        let cells = [
            terminal_safe(&r.period).chars().count(),
            who,
            self.amount_width(t.rx_bytes),
            self.amount_width(t.tx_bytes),
            self.amount_width(t.bytes()),
            bar,
        ];
        for (w, cell) in self.widths.iter_mut().zip(cells) {
            *w = (*w).max(cell);
        }
    }

    /// The header line, once every row is measured.
    pub fn head(&mut self) -> String {
        let total = self.total_cells();
        widen(&mut self.widths, &total);
        let header = Self::HEADER.map(String::from);
        line(&header, &self.widths, 2)
    }

    /// Second pass: one row's line.
    pub fn row(&mut self, r: &PeriodRow) -> &str {
        let named = self.last.as_deref() != Some(r.period.as_str());
        if named {
            self.last = Some(r.period.clone());
        }
        let [period, who_cell, rx, tx, total, bar_cell] = &mut self.cells;
        for c in [
            &mut *period,
            &mut *who_cell,
            &mut *rx,
            &mut *tx,
            &mut *total,
            &mut *bar_cell,
        ] {
            c.clear();
        }
        if named {
            period.push_str(&terminal_safe(&r.period));
        }
        write_who(who_cell, r.uid, r.user.as_deref(), None);
        if let Cow::Owned(safe) = terminal_safe(who_cell) {
            *who_cell = safe;
        }
        let t = &r.traffic;
        for (cell, n) in [(rx, t.rx_bytes), (tx, t.tx_bytes), (total, t.bytes())] {
            write_amount(cell, n, self.exact);
        }
        push_bar(bar_cell, t.bytes(), self.max.max(t.bytes()));
        self.line.clear();
        let cells = self.cells.iter().map(String::as_str);
        push_line(&mut self.line, cells, &self.widths, 2);
        &self.line
    }

    /// The rule and the total line.
    pub fn foot(&self) -> String {
        // Bars are padded to one width, so right-aligning the column keeps them
        // left-aligned.
        rule(&self.widths) + &line(&self.total_cells(), &self.widths, 2)
    }
}

/// The bar as it was formatted before issue 26: the reference of [`push_bar`] in the
/// tests' tables.
#[cfg(test)]
fn bar(n: u64, max: u64) -> String {
    if max == 0 || n == 0 {
        return String::new();
    }
    let w = ((n as f64 / max as f64) * BAR_WIDTH as f64)
        .round()
        .max(1.0) as usize;
    format!("{:<BAR_WIDTH$}", "#".repeat(w))
}

/// A bar appended to `out`: `#` in proportion to `max`, at least one, padded with
/// blanks to [`BAR_WIDTH`]; nothing for no bytes.
fn push_bar(out: &mut String, n: u64, max: u64) {
    if max == 0 || n == 0 {
        return;
    }
    let w = ((n as f64 / max as f64) * BAR_WIDTH as f64)
        .round()
        .max(1.0) as usize;
    out.extend(std::iter::repeat_n('#', w));
    out.extend(std::iter::repeat_n(' ', BAR_WIDTH.saturating_sub(w)));
}

#[cfg(test)]
mod tests;
