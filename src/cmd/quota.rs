//! `netledger quota`: each user's standing in the current billing cycle; `quota grant`:
//! a one-off extra allowance. Run by an unprivileged user, the caller's own line only,
//! from the view file the last pass wrote for them (see `crate::quota::view`).

use std::io::Write;

use anyhow::Result;

use super::common::{open_for_reading, resolve_user};
use crate::quota::{standings, system_groups, view, Cycle};
use crate::report;
use crate::settings::{Quota, Settings};

/// Print the standings, or grant.
pub fn run(settings: &Settings, s: &Quota) -> Result<()> {
    let args = s;
    if let Some((user, size)) = &s.grant {
        return grant(settings, s, user, *size);
    }
    let mut out = std::io::stdout().lock();
    if !s.privileged {
        let me = rustix::process::getuid().as_raw();
        if let Some(u) = args.user.as_deref() {
            let uid = u
                .parse::<u32>()
                .ok()
                .or_else(|| crate::sources::users::uid_of(u));
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
    let store = open_for_reading(&settings.db)?;
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

fn grant(settings: &Settings, s: &Quota, user: &str, size: u64) -> Result<()> {
    let store = open_for_reading(&settings.db)?;
    let uid = resolve_user(&store, user)?;
    drop(store);
    let cycle = Cycle::at(s.now, s.policy.cycle_day, s.utc);
    let total = crate::store::quota::grant_at(
        &settings.db,
        uid,
        cycle.start,
        size,
        s.now,
        std::time::Duration::from_secs(5),
    )?;
    if !settings.quiet {
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
