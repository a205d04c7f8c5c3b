//! The CLI's help and version. (Having an integration test here also makes
//! `cargo test --workspace` build the `latchkey` binary that `tests/cli.rs` runs.)

use std::process::Command;

fn latchkey(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .output()
        .expect("latchkey runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `latchkey --help` names the `run` and `serve` commands; `run --help` and
/// `serve --help` document every flag.
#[test]
fn help_documents_the_flags() {
    let top = latchkey(&["--help"]);
    assert!(top.contains("run") && top.contains("serve"), "{top}");
    let serve = latchkey(&["serve", "--help"]);
    for flag in [
        "--addr",
        "--max-concurrent-requests",
        "--shutdown-grace",
        "--store",
        "--timeout",
        "--max-memory",
        "--fuel",
        "--dir",
        "--allow-network",
    ] {
        assert!(serve.contains(flag), "{flag} is not in the help:\n{serve}");
    }
    let run = latchkey(&["run", "--help"]);
    for flag in [
        "--app-id",
        "--store",
        "--password-file",
        "--password-env",
        "--store-timeout-ms",
        "--instances",
        "--dir",
        "--env",
    ] {
        assert!(run.contains(flag), "{flag} is not in the help:\n{run}");
    }
}

/// `latchkey --version` prints the crate's version.
#[test]
fn version_is_the_crate_version() {
    assert!(latchkey(&["--version"]).contains(env!("CARGO_PKG_VERSION")));
}
