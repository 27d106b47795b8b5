//! A real sshd for the tests of services that hand connections to users (`tests/ssh.rs`,
//! `tests/evasion.rs`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{run, wait_for, Netns};

/// sshd in a namespace, in the foreground (`-D`), killed by pid on drop: its key,
/// configuration, pid file and log in a directory removed after it.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sshd {
    /// sshd on `listen`:22 in `ns`, once it listens.
    pub fn start(ns: &Netns, listen: &str) -> Sshd {
        // sshd's privilege separation directory (the package makes it at boot).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("netledger-sshd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("hostkey")));
        let config = format!(
            "Port 22\nListenAddress {listen}\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
             UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin no\nStrictModes no\nUseDNS no\nPrintMotd no\nLogLevel VERBOSE\n\
             AuthorizedKeysFile .ssh/authorized_keys\nAllowTcpForwarding yes\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let child = ns
            .cmd("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd (install openssh-server)");
        let sshd = Sshd { child, dir };
        wait_for("sshd listening on port 22", Duration::from_secs(20), || {
            let out = ns.cmd("ss").args(["-Hltn", "sport = :22"]).output().ok()?;
            (!out.stdout.is_empty()).then_some(())
        });
        sshd
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        super::end(&mut self.child);
    }
}
