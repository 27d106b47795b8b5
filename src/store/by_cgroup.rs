//! What the reports read of the table `cgroups` (migration 0016): the cgroups of a unit or
//! a job (`top --unit`, `top --job`, `netledger job`), and the unit and job of cgroup ids
//! (`top --by unit|job`). The usage tables key their rows by cgroup id; a report sums per
//! id first and names the few distinct ids after.

use rusqlite::params;

use super::{Store, StoreError, CGROUP_SCHEMA};
use crate::model::FastMap;

/// Some cgroups' traffic: those of a systemd unit, or of a Slurm job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Only {
    /// The cgroups whose unit is this (`nginx.service`).
    Unit(String),
    /// The cgroups of this Slurm job (only those the resolver trusted: under a root-owned
    /// `…slurmstepd.scope`).
    Job(u64),
}

impl std::fmt::Display for Only {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Only::Unit(u) => write!(f, "unit {u:?}"),
            Only::Job(j) => write!(f, "job {j}"),
        }
    }
}

/// What a cgroup path says, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupName {
    /// The systemd unit, if any.
    pub unit: Option<String>,
    /// The Slurm job, if any.
    pub job: Option<u64>,
}

impl Store {
    /// The ids of the cgroups `only` names, in order; empty when the database has none
    /// (no socket of them was ever charged, or it predates cgroups).
    pub fn cgroups_of(&self, only: &Only) -> Result<Vec<i64>, StoreError> {
        if self.schema < CGROUP_SCHEMA {
            return Ok(vec![]);
        }
        let wrap = |e| self.wrap(e);
        let (sql, value): (&str, rusqlite::types::Value) = match only {
            Only::Unit(u) => (
                "SELECT id FROM cgroups WHERE unit = ?1 ORDER BY id",
                u.clone().into(),
            ),
            Only::Job(j) => (
                "SELECT id FROM cgroups WHERE job = ?1 ORDER BY id",
                (*j as i64).into(),
            ),
        };
        let mut stmt = self.conn.prepare(sql).map_err(wrap)?;
        let ids = stmt
            .query_map(params![value], |r| r.get(0))
            .map_err(wrap)?
            .collect::<Result<Vec<i64>, _>>()
            .map_err(wrap)?;
        Ok(ids)
    }

    /// The time of the first stored usage row before `until`, if any.
    pub fn first_usage(&self, until: i64) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT min(t) FROM (SELECT min(ts) AS t FROM usage_raw WHERE ts < ?1
                                     UNION ALL
                                     SELECT min(ts) FROM usage_tiers WHERE ts < ?1)",
                [until],
                |r| r.get(0),
            )
            .map_err(|e| self.wrap(e))
    }

    /// The unit and job of each of `ids` (those the table holds).
    pub(super) fn cgroup_names(&self, ids: &[i64]) -> Result<FastMap<i64, CgroupName>, StoreError> {
        let wrap = |e| self.wrap(e);
        let mut out = FastMap::default();
        if ids.is_empty() || self.schema < CGROUP_SCHEMA {
            return Ok(out);
        }
        let json = serde_json::to_string(ids).expect("numbers encode");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, unit, job FROM cgroups
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .map_err(wrap)?;
        let mut rows = stmt.query([json]).map_err(wrap)?;
        while let Some(r) = rows.next().map_err(wrap)? {
            let id: i64 = r.get(0).map_err(wrap)?;
            let name = CgroupName {
                unit: r.get(1).map_err(wrap)?,
                job: r.get::<_, Option<i64>>(2).map_err(wrap)?.map(|j| j as u64),
            };
            out.insert(id, name);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::account::{Kind, PassPlan};
    use crate::attribute::Cgroup;
    use crate::store::query::tests::top_by_sql_in;
    use crate::store::query::{By, TopQuery};
    use crate::store::retention::Retention;
    use crate::store::totals::tests::{random_plan, Rng};
    use crate::store::{OpenOptions, PassRecord};

    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00Z
    const DAY: i64 = 86_400;

    /// Where users' traffic comes from: two steps of job 42, a step of job 43, a service,
    /// a login session, a user's look-alike `job_42` (not a job: the resolver does not
    /// trust it), and none.
    const CGROUPS: [(&str, Option<u64>); 6] = [
        (
            "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0",
            Some(42),
        ),
        (
            "/system.slice/slurmstepd.scope/job_42/step_batch/user/task_0",
            Some(42),
        ),
        (
            "/system.slice/slurmstepd.scope/job_43/step_0/user/task_0",
            Some(43),
        ),
        ("/system.slice/backup.service", None),
        ("/user.slice/user-1001.slice/session-7.scope", None),
        (
            "/user.slice/user-1002.slice/user@1002.service/app.slice/job_42",
            None,
        ),
    ];

    /// `plan` with a cgroup drawn for each charged row (or none).
    fn with_cgroups(plan: PassPlan, rng: &mut Rng) -> PassPlan {
        let mut out = PassPlan::default();
        for (mut key, t) in plan.usage {
            if key.kind != Kind::Unattributed {
                key.cgroup = CGROUPS
                    .get(rng.below(CGROUPS.len() as u64 + 1) as usize)
                    .map(|(path, job)| Cgroup {
                        path: (*path).into(),
                        job: *job,
                    });
            }
            out.usage.entry(key).or_default().add(&t);
        }
        out
    }

    /// Six days of passes every 10 minutes with cgroups, rolled up as they go (raw kept 2
    /// days, hourly 4, two keys per user and hour: the rest folds into `(other)`), the
    /// raw tier's keys summed.
    fn store_with_cgroups(dir: &std::path::Path) -> Store {
        let mut store = Store::open(&dir.join("c.db"), &OpenOptions::default()).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let r = Retention {
            raw: Duration::from_secs(2 * DAY as u64),
            hourly: Duration::from_secs(4 * DAY as u64),
            hourly_top: 2,
            ..Retention::default()
        };
        for step in 0..6 * 144 {
            let ts = T0 + step * 600 + rng.below(600) as i64;
            let plan = with_cgroups(random_plan(&mut rng), &mut rng);
            let record = PassRecord {
                started_at: ts,
                mode: "snapshot",
                ..PassRecord::default()
            };
            store.write_pass(&record, &plan, &[]).unwrap();
            if step % 12 == 0 {
                store.roll_up(ts, &r, 500).unwrap();
            }
        }
        store.catch_up_keys(T0 + 6 * DAY, u64::MAX).unwrap();
        store
    }

    #[test]
    fn a_job_is_its_trusted_cgroups_and_a_unit_all_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_cgroups(dir.path());
        let paths = |only: Only| -> Vec<String> {
            let mut paths: Vec<String> = store
                .cgroups_of(&only)
                .unwrap()
                .iter()
                .map(|id| {
                    store
                        .conn()
                        .query_row("SELECT path FROM cgroups WHERE id = ?1", [id], |r| r.get(0))
                        .unwrap()
                })
                .collect();
            paths.sort();
            paths
        };
        // Not the user's look-alike job_42.
        assert_eq!(paths(Only::Job(42)), [CGROUPS[0].0, CGROUPS[1].0]);
        assert_eq!(paths(Only::Job(43)), [CGROUPS[2].0]);
        assert_eq!(
            paths(Only::Unit("slurmstepd.scope".into())),
            [CGROUPS[0].0, CGROUPS[1].0, CGROUPS[2].0]
        );
        assert_eq!(paths(Only::Unit("job_42".into())), Vec::<String>::new());
        assert!(paths(Only::Job(44)).is_empty());
        assert!(paths(Only::Unit("nginx.service".into())).is_empty());
    }

    /// `top --by cgroup|unit|job` (with the other keys, and only a unit's or a job's
    /// traffic) sums exactly what SQL's GROUP BY of every row joined to its cgroup does,
    /// through the sums per key and through the detail alike; and its rows add up to its
    /// total.
    #[test]
    fn top_by_cgroup_unit_and_job_equals_the_detail() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_cgroups(dir.path());
        let with_cgroup: i64 = store
            .conn()
            .query_row(
                "SELECT count(*) FROM usage_tiers WHERE cgroup <> 0 AND granularity = 3600",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(with_cgroup > 100, "{with_cgroup} hourly rows with a cgroup");
        let ids = |o: Only| store.cgroups_of(&o).unwrap();
        let onlys = [
            None,
            Some(ids(Only::Job(42))),
            Some(ids(Only::Unit("slurmstepd.scope".into()))),
            Some(ids(Only::Unit("backup.service".into()))),
        ];
        let bys = [
            vec![By::Cgroup],
            vec![By::Unit],
            vec![By::Job],
            vec![By::Unit, By::Job],
            vec![By::Unit, By::Remote],
            vec![By::Job, By::Program, By::Port],
            vec![By::Cgroup, By::Via, By::Container],
            vec![By::Remote],
        ];
        let mut rng = Rng(28);
        let mut windows = vec![(T0, T0 + 6 * DAY), (T0 + 4 * DAY, T0 + 6 * DAY)];
        for _ in 0..12 {
            let a = T0 + rng.below(6 * DAY as u64) as i64;
            windows.push((a, a + 1 + rng.below(3 * DAY as u64) as i64));
        }
        let (mut compared, mut clipped) = (0, 0);
        for &(since, until) in &windows {
            for by in &bys {
                for only in &onlys {
                    for uid in [None, Some(1001)] {
                        let q = TopQuery {
                            since,
                            until,
                            by: by.clone(),
                            uid,
                            limit: 1000,
                        };
                        let w = format!("[{since}, {until}) by {by:?} uid {uid:?} {only:?}");
                        store.set_use_totals(true);
                        let fast = store.top_in(&q, only.as_deref()).unwrap();
                        store.set_use_totals(false);
                        let slow = store.top_in(&q, only.as_deref()).unwrap();
                        let sql = top_by_sql_in(&store, &q, only.as_deref());
                        assert_eq!(fast.rows, sql.rows, "rows against SQL {w}");
                        assert_eq!(fast.rows, slow.rows, "rows {w}");
                        for r in [&slow, &sql] {
                            assert_eq!(
                                (fast.total, fast.unattributed, fast.excluded, fast.keys_from),
                                (r.total, r.unattributed, r.excluded, r.keys_from),
                                "totals {w}"
                            );
                        }
                        let mut sum = crate::account::Traffic::default();
                        fast.rows.iter().for_each(|r| sum.add(&r.traffic));
                        assert_eq!(sum, fast.total, "rows add up to the total {w}");
                        compared += usize::from(!fast.rows.is_empty());
                        clipped += usize::from(fast.keys_from.is_some());
                    }
                }
            }
        }
        assert!(compared > 500, "{compared} reports with rows");
        // Over the daily tier (no cgroups kept), from where the keys begin.
        assert!(clipped > 50, "{clipped} answered from where the keys begin");
    }

    /// The metrics' sums per unit are `top --by unit`'s rows summed over their users.
    #[test]
    fn unit_sums_are_top_by_unit_summed_over_users() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_cgroups(dir.path());
        let mut rng = Rng(7);
        let mut compared = 0;
        for _ in 0..20 {
            let since = T0 + rng.below(6 * DAY as u64) as i64;
            let until = since + 1 + rng.below(2 * DAY as u64) as i64;
            let q = TopQuery {
                since,
                until,
                by: vec![By::Unit],
                uid: None,
                limit: 1000,
            };
            let mut want = std::collections::BTreeMap::new();
            for r in store.top(&q).unwrap().rows {
                if let Some(unit) = r.unit {
                    want.entry(unit)
                        .or_insert_with(crate::account::Traffic::default)
                        .add(&r.traffic);
                }
            }
            assert_eq!(store.unit_sums(since, until).unwrap(), want);
            compared += want.len();
        }
        assert!(compared > 40, "{compared} units compared");
    }

    /// Grouped by unit, the names come from the path's innermost service or scope; by
    /// job, only the trusted jobs; rows without either are one group (`None`).
    #[test]
    fn units_and_jobs_are_named_from_the_cgroups() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_cgroups(dir.path());
        let q = |by| TopQuery {
            since: T0 + 4 * DAY,
            until: T0 + 6 * DAY,
            by,
            uid: None,
            limit: 1000,
        };
        let units: std::collections::BTreeSet<Option<String>> = store
            .top(&q(vec![By::Unit]))
            .unwrap()
            .rows
            .into_iter()
            .map(|r| r.unit)
            .collect();
        let want = [
            None,
            Some("backup.service"),
            Some("session-7.scope"),
            Some("slurmstepd.scope"),
            // The look-alike job's: the user's own manager.
            Some("user@1002.service"),
        ];
        assert_eq!(units, want.iter().map(|u| u.map(String::from)).collect());
        let jobs: std::collections::BTreeSet<Option<u64>> = store
            .top(&q(vec![By::Job]))
            .unwrap()
            .rows
            .into_iter()
            .map(|r| r.job)
            .collect();
        assert_eq!(jobs, [None, Some(42), Some(43)].into());
    }
}
