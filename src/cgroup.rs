//! What a cgroup v2 path says about who moved the bytes (pure): the systemd unit, the slice,
//! the Slurm job.
//!
//! Every socket carries the cgroup of the process that created it (sock_diag's
//! `INET_DIAG_CGROUP_ID`, the cgroup directory's inode number; [`crate::sources::cgroups`]
//! turns it into a path). A path is written relative to the cgroup2 root, with a leading
//! `/` (`/system.slice/nginx.service`), as `/proc/PID/cgroup` writes it.
//!
//! Layouts read here:
//! - systemd: services `/system.slice/NAME.service`, login sessions
//!   `/user.slice/user-UID.slice/session-N.scope`, a user's own manager and its apps
//!   `/user.slice/user-UID.slice/user@UID.service/app.slice/app-….scope`, containers and
//!   machines as scopes (`docker-ID.scope`, `machine-NAME.scope`).
//! - Slurm's cgroup/v2 plugin (22.05 and later): a job's processes under
//!   `SLICE/slurmstepd.scope/job_ID/step_STEP/user/task_N` (STEP a number, `batch`,
//!   `extern` or `interactive`; the step daemons themselves under `…/step_STEP/slurm`); the
//!   scope is `NODENAME_slurmstepd.scope` where one host runs several slurmd, and SLICE is
//!   `system.slice` unless `CgroupSlice` says otherwise. With `IgnoreSystemd` Slurm makes the
//!   same directories by hand; inside a container with the host's cgroup namespace the slice
//!   may appear twice (`/system.slice/system.slice/…`). The job is the `job_ID` directory
//!   right under a directory whose name ends in `slurmstepd.scope`, wherever that is.

/// The systemd unit a cgroup belongs to: the innermost `.service` or `.scope` directory of
/// `path`, else the innermost `.slice`; `None` for the root and for cgroups made outside
/// systemd's naming (`/mygroup`).
///
/// A Slurm job's unit is `slurmstepd.scope` (its job is [`job`]). Inside a user's own
/// manager (`user@UID.service`, the subtree systemd delegates to the user, where they name
/// the directories) the unit keeps that prefix — `user@1000.service/app.slice/app-x.scope`
/// — so that a user's `backup.service` or `nginx.service` is never counted as the system's.
pub fn unit(path: &str) -> Option<&str> {
    let parts = || path.split('/').filter(|p| !p.is_empty());
    let unit = parts()
        .rev()
        .find(|p| p.ends_with(".service") || p.ends_with(".scope"))
        .or_else(|| parts().rev().find(|p| p.ends_with(".slice")))?;
    let offset = |p: &str| p.as_ptr() as usize - path.as_ptr() as usize;
    let manager = parts()
        .take_while(|p| offset(p) < offset(unit))
        .find(|p| p.starts_with("user@") && p.ends_with(".service"));
    Some(match manager {
        Some(m) => &path[offset(m)..offset(unit) + unit.len()],
        None => unit,
    })
}

/// The Slurm job id of a cgroup: the `job_ID` directory right under a `…slurmstepd.scope`
/// directory; `None` elsewhere (and for `slurmstepd.scope/system`, the step daemons' own).
pub fn job(path: &str) -> Option<u64> {
    let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
    while let Some(p) = parts.next() {
        if p.ends_with("slurmstepd.scope") {
            let id = parts.peek()?.strip_prefix("job_")?;
            // Digits only: `u64::from_str` would also take a leading `+`.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return id.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::service("/system.slice/nginx.service", Some("nginx.service"))]
    #[case::session(
        "/user.slice/user-1000.slice/session-42.scope",
        Some("session-42.scope")
    )]
    #[case::app_in_user_manager(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-123.scope",
        Some("user@1000.service/app.slice/app-firefox-123.scope")
    )]
    #[case::user_manager_itself(
        "/user.slice/user-1000.slice/user@1000.service/init.scope",
        Some("user@1000.service/init.scope")
    )]
    #[case::users_look_alike_system_service(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/backup.service",
        Some("user@1000.service/app.slice/backup.service")
    )]
    #[case::user_manager_with_subgroups(
        "/user.slice/user-1000.slice/user@1000.service/app.slice/job_42",
        Some("user@1000.service")
    )]
    #[case::service_subgroup("/system.slice/postfix.service/smtpd", Some("postfix.service"))]
    #[case::slice_only("/user.slice/user-1000.slice", Some("user-1000.slice"))]
    #[case::slurm(
        "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0",
        Some("slurmstepd.scope")
    )]
    #[case::docker(
        "/system.slice/docker-0123456789ab.scope",
        Some("docker-0123456789ab.scope")
    )]
    #[case::root("/", None)]
    #[case::empty("", None)]
    #[case::hand_made("/mygroup/sub", None)]
    fn unit_is_the_innermost_service_or_scope(#[case] path: &str, #[case] want: Option<&str>) {
        assert_eq!(unit(path), want);
    }

    #[rstest]
    #[case::default_layout("/system.slice/slurmstepd.scope/job_42/step_0/user/task_0", Some(42))]
    #[case::batch_step("/system.slice/slurmstepd.scope/job_7/step_batch/user/task_0", Some(7))]
    #[case::extern_step(
        "/system.slice/slurmstepd.scope/job_7/step_extern/user/task_special",
        Some(7)
    )]
    #[case::job_level("/system.slice/slurmstepd.scope/job_123456789", Some(123456789))]
    #[case::step_daemon("/system.slice/slurmstepd.scope/job_9/step_0/slurm", Some(9))]
    #[case::multiple_slurmd(
        "/system.slice/node17_slurmstepd.scope/job_5/step_1/user/task_3",
        Some(5)
    )]
    #[case::cgroup_slice("/hpc.slice/slurmstepd.scope/job_11/step_0", Some(11))]
    #[case::doubled_slice(
        "/system.slice/system.slice/localhost_slurmstepd.scope/job_3/step_0",
        Some(3)
    )]
    #[case::stepd_system("/system.slice/slurmstepd.scope/system", None)]
    #[case::scope_itself("/system.slice/slurmstepd.scope", None)]
    #[case::not_a_number("/system.slice/slurmstepd.scope/job_x1/step_0", None)]
    #[case::plus_sign("/system.slice/slurmstepd.scope/job_+1/step_0", None)]
    #[case::empty_id("/system.slice/slurmstepd.scope/job_/step_0", None)]
    #[case::job_elsewhere("/user.slice/user-1000.slice/session-1.scope/job_42", None)]
    #[case::service("/system.slice/backup.service", None)]
    fn job_is_read_under_slurmstepd_scope(#[case] path: &str, #[case] want: Option<u64>) {
        assert_eq!(job(path), want);
    }
}
