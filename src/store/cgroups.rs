//! Cgroup paths stored once (`cgroups`, migration 0016), as program names are: a usage row,
//! a flow state and a logged connection refer to one by id (0: none), and the row keeps
//! what the path says — the systemd unit ([`crate::cgroup::unit`]) and the Slurm job the
//! resolver trusted (`sources::cgroups`: only under a root-owned `…slurmstepd.scope`).

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection};

use crate::attribute::Cgroup;

/// Cgroup paths interned in `cgroups` within one write transaction (an id from a
/// rolled-back transaction must not be reused).
#[derive(Default)]
pub(crate) struct CgroupIds {
    cache: HashMap<Arc<str>, i64>,
}

impl CgroupIds {
    /// The id of `c`'s path, added (with its unit and job) if new; 0 for none.
    pub(crate) fn id_of(&mut self, conn: &Connection, c: Option<&Cgroup>) -> rusqlite::Result<i64> {
        let Some(c) = c else { return Ok(0) };
        if let Some(id) = self.cache.get(&c.path) {
            return Ok(*id);
        }
        // A job learnt later (the resolver's first walk missed the scope's owner) is kept;
        // one never taken back.
        let id = conn
            .prepare_cached(
                "INSERT INTO cgroups (path, unit, job) VALUES (?1, ?2, ?3)
                 ON CONFLICT (path) DO UPDATE SET job = coalesce(job, excluded.job)
                 RETURNING id",
            )?
            .query_row(
                params![
                    c.path.as_ref(),
                    crate::cgroup::unit(&c.path),
                    c.job.map(|j| j as i64)
                ],
                |r| r.get(0),
            )?;
        self.cache.insert(c.path.clone(), id);
        Ok(id)
    }
}

/// The flow state's cgroup column for a database at `schema`: its `cgroups.id`, 0 (none)
/// before migration 0016.
pub(super) fn state_column(schema: i64) -> &'static str {
    match schema >= super::CGROUP_SCHEMA {
        true => "cgroup",
        false => "0",
    }
}

/// A cgroup from columns `i` (path) and `i + 1` (job).
pub(crate) fn cgroup_at(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<Cgroup>> {
    let path: Option<String> = r.get(i)?;
    let job: Option<i64> = r.get(i + 1)?;
    Ok(path.map(|p| Cgroup {
        path: p.into(),
        job: job.map(|j| j as u64),
    }))
}

impl super::Store {
    /// Every stored cgroup by id (none before migration 0016): the connection log refers
    /// to them by id.
    pub(super) fn cgroups_by_id(&self) -> Result<HashMap<i64, Cgroup>, super::StoreError> {
        if self.schema < super::CGROUP_SCHEMA {
            return Ok(HashMap::new());
        }
        let wrap = |e| self.wrap(e);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, path, job FROM cgroups")
            .map_err(wrap)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, cgroup_at(r, 1)?)))
            .map_err(wrap)?;
        let mut out = HashMap::new();
        for row in rows {
            if let (id, Some(c)) = row.map_err(wrap)? {
                out.insert(id, c);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::account::account_pass;
    use crate::attribute::{Attributed, Attribution, Direction, Verdict};
    use crate::model::{Counters, Flow, Tuple};
    use crate::store::{dump_rows, OpenOptions, PassRecord, Store};

    fn flow(id: u32, sport: u16, bytes: u64) -> Flow {
        let t = |s: &str, d: &str, sp, dp| Tuple {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
            proto: 6,
            sport: sp,
            dport: dp,
        };
        Flow {
            orig: t("198.51.100.1", "198.51.100.2", sport, 443),
            reply: t("198.51.100.2", "198.51.100.1", 443, sport),
            id,
            zone: 0,
            mark: 0,
            status: 0,
            orig_counters: Some(Counters { packets: 1, bytes }),
            reply_counters: Some(Counters {
                packets: 1,
                bytes: bytes * 10,
            }),
            start_ns: None,
            stop_ns: None,
        }
    }

    fn of(cgroup: Option<Cgroup>) -> Attributed {
        Attributed {
            verdict: Verdict::User(Attribution {
                uid: 1001,
                program: Some("curl".into()),
                direction: Direction::Out,
                via: Default::default(),
                container: None,
                cgroup,
            }),
            direction: Some(Direction::Out),
            remote: "198.51.100.2".parse().unwrap(),
            port: 443,
        }
    }

    fn job(path: &str, job: Option<u64>) -> Option<Cgroup> {
        Some(Cgroup {
            path: path.into(),
            job,
        })
    }

    /// Two jobs and a service of one user, and a socket of no known cgroup: each its own
    /// usage row, the views name path, unit and job, and the flow state keeps the cgroup.
    #[test]
    fn the_cgroup_is_a_usage_key_shown_by_the_views_and_kept_in_flow_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("c.db"), &OpenOptions::default()).unwrap();
        let stepd = "/system.slice/slurmstepd.scope";
        let flows = [
            flow(1, 40001, 100),
            flow(2, 40002, 20),
            flow(3, 40003, 3),
            flow(4, 40004, 5000),
        ];
        let at = [
            of(job(&format!("{stepd}/job_7/step_0/user/task_0"), Some(7))),
            of(job(&format!("{stepd}/job_8/step_0/user/task_0"), Some(8))),
            of(job("/system.slice/backup.service", None)),
            of(None),
        ];
        let plan = account_pass(1000, &flows, &at, &HashMap::new(), 3);
        let rec = PassRecord {
            started_at: 1000,
            mode: "snapshot",
            ..PassRecord::default()
        };
        store.write_pass(&rec, &plan, &[]).unwrap();
        let rows = dump_rows(
            store.conn(),
            "SELECT uid, cgroup, unit, job, rx_bytes FROM usage ORDER BY rx_bytes",
        );
        let t = |s: &str| format!("Text({:?})", s.as_bytes());
        assert_eq!(
            rows,
            [
                format!(
                    "Integer(1001),{},{},Null,Integer(30)",
                    t("/system.slice/backup.service"),
                    t("backup.service")
                ),
                format!(
                    "Integer(1001),{},{},Integer(8),Integer(200)",
                    t(&format!("{stepd}/job_8/step_0/user/task_0")),
                    t("slurmstepd.scope")
                ),
                format!(
                    "Integer(1001),{},{},Integer(7),Integer(1000)",
                    t(&format!("{stepd}/job_7/step_0/user/task_0")),
                    t("slurmstepd.scope")
                ),
                "Integer(1001),Null,Null,Null,Integer(50000)".into(),
            ]
        );
        let cgroups = dump_rows(store.conn(), "SELECT id, path, unit, job FROM cgroups");
        assert_eq!(cgroups.len(), 3, "{cgroups:?}");
        let by_job = dump_rows(
            store.conn(),
            "SELECT job, sum(rx_bytes + tx_bytes) FROM usage GROUP BY job ORDER BY job",
        );
        assert_eq!(
            by_job,
            [
                "Null,Integer(55033)",
                "Integer(7),Integer(1100)",
                "Integer(8),Integer(220)"
            ]
        );
        let by_unit = dump_rows(
            store.conn(),
            "SELECT unit, sum(rx_bytes + tx_bytes) FROM usage GROUP BY unit ORDER BY unit",
        );
        assert_eq!(
            by_unit.len(),
            3,
            "none, backup.service, slurmstepd.scope: {by_unit:?}"
        );
        // `export` reads them too.
        let export = store.usage_rows(0, 2000).unwrap();
        let mut jobs: Vec<_> = export
            .iter()
            .map(|r| (r.job, r.unit.clone(), r.traffic.rx_bytes))
            .collect();
        jobs.sort();
        assert_eq!(
            jobs,
            [
                (None, None, 50000),
                (None, Some("backup.service".into()), 30),
                (Some(7), Some("slurmstepd.scope".into()), 1000),
                (Some(8), Some("slurmstepd.scope".into()), 200),
            ]
        );
        let state = store.load_state().unwrap();
        let kept = state[&flows[0].key()].attribution.clone().unwrap().cgroup;
        assert_eq!(kept, at[0].attribution().unwrap().cgroup);
        assert_eq!(
            state[&flows[3].key()].attribution.clone().unwrap().cgroup,
            None
        );
        // No cgroup is no row of `cgroups`: id 0.
        let none: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM usage_raw WHERE cgroup = 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(none, 1);
    }

    /// A database at schema 15 (typed, before the cgroups), read without migrating: every
    /// report, the export, the flow state and the log read as they do after migration 0016
    /// (cgroup none everywhere).
    #[test]
    fn an_unmigrated_schema_15_database_reads_as_after_its_migration() {
        use crate::store::query::{By, Period, TopQuery};
        use rusqlite_migration::{Migrations, M};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v15.db");
        let mut c = rusqlite::Connection::open(&p).unwrap();
        Migrations::new(
            super::super::MIGRATIONS[..15]
                .iter()
                .map(|s| M::up(s))
                .collect(),
        )
        .to_latest(&mut c)
        .unwrap();
        c.execute_batch(
            "INSERT INTO programs (name) VALUES ('curl');
             INSERT INTO remotes (addr) VALUES ('198.51.100.2');
             INSERT INTO usage_raw SELECT 7200, 1001, 0, '', -1, 0, -1, p.id, r.id, 6, 443,
                 1, 500, 50, 5, 5 FROM programs p, remotes r
                 WHERE p.name = 'curl' AND r.addr = '198.51.100.2';
             INSERT INTO usage_tiers SELECT 3600, 3600, 1001, 0, '', -1, 0, -1, p.id, r.id,
                 6, 443, 1000, 100, 9, 9 FROM programs p, remotes r
                 WHERE p.name = 'curl' AND r.addr = '198.51.100.2';
             INSERT INTO users VALUES (1001, 'alice', 0, 0);
             INSERT INTO flow_state VALUES (0, 6, '198.51.100.1', '198.51.100.2', 40000,
                 443, 7, 1, 100, 1, 900, 1001, 'curl', 'out', 7200, 7260, 0, NULL, NULL,
                 NULL, NULL);",
        )
        .unwrap();
        drop(c);
        let read = |store: &Store| -> Vec<String> {
            let mut out = vec![];
            for by in [vec![], vec![By::Program], vec![By::Remote, By::Port]] {
                let q = TopQuery {
                    since: 0,
                    until: 100_000,
                    by,
                    uid: None,
                    limit: 10,
                };
                out.push(format!("{:?}", store.top(&q).unwrap()));
            }
            let periods = store.periods(Period::Hour, 0, 100_000, None, true);
            out.push(format!("{:?}", periods.unwrap()));
            out.push(format!("{:?}", store.usage_rows(0, 100_000).unwrap()));
            out.push(format!("{:?}", store.load_state().unwrap()));
            out.push(format!("{:?}", store.connection_log(0, i64::MAX).unwrap()));
            out
        };
        let ro = OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        };
        let before = read(&Store::open(&p, &ro).unwrap());
        assert!(before[1].contains("curl"), "{}", before[1]);
        assert!(before[4].contains("rx_bytes: 500"), "{}", before[4]);
        drop(Store::open(&p, &OpenOptions::default()).unwrap());
        let after = Store::open(&p, &ro).unwrap();
        assert!(
            after.schema >= super::super::CGROUP_SCHEMA,
            "{}",
            after.schema
        );
        assert_eq!(read(&after), before);
    }
}
