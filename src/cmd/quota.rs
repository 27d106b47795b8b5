//! `netledger quota`: each user's standing in the current billing cycle; `quota grant`:
//! a one-off extra allowance. Run by an unprivileged user, the caller's own line only,
//! from the view file the last pass wrote for them (see `crate::quota::view`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::common::{open_for_reading, resolve_user};
use crate::cli::{Cli, QuotaAction, QuotaArgs};
use crate::quota::{standings, system_groups, view, Cycle, Policy};
use crate::report;

/// The settings of `quota`, resolved (defaults < file < environment < flags).
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// Allowances and the cycle.
    pub policy: Policy,
    /// Where unprivileged callers read their view file.
    pub view_dir: PathBuf,
    /// Cycles in UTC.
    pub utc: bool,
    /// The instant judged.
    pub now: i64,
    /// Read the database (root), or the caller's own view file.
    pub privileged: bool,
}

/// Resolve `quota`'s settings.
pub fn settings(cli: &Cli, args: &QuotaArgs) -> Result<QuotaSettings> {
    let path = crate::config::quota::config_path(cli.config.as_deref());
    let policy = crate::config::quota::policy(&cli.file, None, &path)?;
    let (utc, now) = match &args.action {
        Some(QuotaAction::Grant { utc, now, .. }) => (*utc, *now),
        None => (args.utc, args.now),
    };
    Ok(QuotaSettings {
        view_dir: args
            .view_dir
            .clone()
            .unwrap_or_else(|| policy.view_dir.clone()),
        policy,
        utc,
        now: now.unwrap_or_else(|| chrono::Utc::now().timestamp()),
        privileged: uzers::get_effective_uid() == 0,
    })
}

/// Print the standings, or grant.
pub fn run(cli: &Cli, args: &QuotaArgs) -> Result<()> {
    let s = settings(cli, args)?;
    if let Some(QuotaAction::Grant { user, size, .. }) = &args.action {
        return grant(cli, &s, user, *size);
    }
    let mut out = std::io::stdout().lock();
    if !s.privileged {
        let me = uzers::get_current_uid();
        if let Some(u) = args.user.as_deref() {
            let uid = u
                .parse::<u32>()
                .ok()
                .or_else(|| uzers::get_user_by_name(u).map(|x| x.uid()));
            if uid != Some(me) {
                anyhow::bail!(
                    "--user {u}: only root sees other users' quota; without --user you see \
                     your own"
                );
            }
        }
        let v = view::read_own(&s.view_dir, me)?;
        let users = [v.standing];
        if args.json {
            serde_json::to_writer_pretty(
                &mut out,
                &report::quota::json(&users, &v.cycle, v.days_left, v.direction),
            )?;
            writeln!(out)?;
        } else {
            out.write_all(
                report::quota::cycle_line(&v.cycle, v.days_left, v.direction, v.now, args.utc)
                    .as_bytes(),
            )?;
            out.write_all(report::quota::table(&users, v.days_left, args.bytes).as_bytes())?;
        }
        out.flush()?;
        return Ok(());
    }
    let store = open_for_reading(cli)?;
    let uid = args
        .user
        .as_deref()
        .map(|u| resolve_user(&store, u))
        .transpose()?;
    let st = standings(&store, &s.policy, s.now, s.utc, uid, &mut system_groups)?;
    if args.json {
        serde_json::to_writer_pretty(
            &mut out,
            &report::quota::json(&st.users, &st.cycle, st.days_left, st.direction),
        )?;
        writeln!(out)?;
    } else {
        out.write_all(
            report::quota::cycle_line(&st.cycle, st.days_left, st.direction, st.now, s.utc)
                .as_bytes(),
        )?;
        out.write_all(report::quota::table(&st.users, st.days_left, args.bytes).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn grant(cli: &Cli, s: &QuotaSettings, user: &str, size: u64) -> Result<()> {
    let store = open_for_reading(cli)?;
    let uid = resolve_user(&store, user)?;
    drop(store);
    let cycle = Cycle::at(s.now, s.policy.cycle_day, s.utc);
    let total = crate::store::quota::grant_at(
        &cli.db,
        uid,
        cycle.start,
        size,
        s.now,
        std::time::Duration::from_secs(5),
    )?;
    if !cli.quiet {
        eprintln!(
            "netledger: granted {} more to {user} (uid {uid}) for the cycle {} ({} granted \
             in this cycle)",
            crate::units::human_bytes(size),
            cycle.label,
            crate::units::human_bytes(total)
        );
    }
    Ok(())
}
