//! The man pages and shell completions in contrib/ are generated from the CLI definition;
//! this test fails when the committed copies drift. Regenerate with
//! `UPDATE_CONTRIB=1 cargo test --test it contrib_docs::`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib")
}

/// Every generated file: (path under contrib/, content).
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = netledger::cli::Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .unwrap();
    out.push((PathBuf::from("man/netledger.1"), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("netledger-{}", sub.get_name());
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let sub = sub.clone().name(static_name);
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut page).unwrap();
        out.push((PathBuf::from(format!("man/{name}.1")), page));
    }
    for (shell, file) in [
        (Shell::Bash, "netledger.bash"),
        (Shell::Zsh, "_netledger"),
        (Shell::Fish, "netledger.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "netledger", &mut buf);
        out.push((PathBuf::from(format!("completions/{file}")), buf));
    }
    out
}

#[test]
fn committed_man_pages_and_completions_match_the_cli() {
    let update = std::env::var_os("UPDATE_CONTRIB").is_some();
    let mut stale = Vec::new();
    for (rel, content) in generated() {
        let path = contrib().join(&rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            stale.push(rel.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "contrib/ is out of date with the CLI: {stale:?}; run \
         `UPDATE_CONTRIB=1 cargo test --test it contrib_docs::` and commit"
    );
}
