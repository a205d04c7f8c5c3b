//! A new user's guests: each a project of its own in a temporary directory outside the
//! repository, built from what latchkey's packages ship and nothing else — the Rust SDK
//! from its packaged crate (`cargo package`'s output, unpacked), Python from the wheel,
//! JavaScript from the npm tarball — as a registry would hand them over. `make packages`
//! (part of `make test`) writes them to `target/packages`.
//!
//! Every project is Dapr's sample: `try_lock("my_file_name", 60 s)`, then "Success" and a
//! hold of `--hold-ms` milliseconds, or "Failed to lock my_file_name.". Where the
//! repository has the sample in that language and world (`guest/demos`, `guest/python/
//! demos`), the project's source is the demo's own text.
//! One host process holds the lock on a real Redis; a second, started once the first has
//! said "Success", fails to take it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use harness::{PATIENCE, RedisServer, latchkey, lines, warm};

/// The repository's root.
fn repository() -> PathBuf {
    std::fs::canonicalize(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap()
}

/// Where `make packages` leaves the packages.
fn packages() -> PathBuf {
    repository().join("target/packages")
}

/// The one file in `target/packages` whose name starts with `prefix` and ends with
/// `suffix`.
fn package(prefix: &str, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(packages())
        .unwrap_or_else(|e| panic!("no target/packages ({e}): run `make packages` first"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        _ => panic!("target/packages holds {found:?} for {prefix}*{suffix}: run `make packages`"),
    }
}

/// Runs `command` to its end, and fails the test with its output unless it succeeded.
fn succeed(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A new user's project directory, outside the repository.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Self {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies a package into the project, as if downloaded there: the project then names
    /// it by a path of its own.
    fn download(&self, package: &Path) -> PathBuf {
        let name = package.file_name().unwrap();
        std::fs::copy(package, self.path().join(name)).unwrap();
        PathBuf::from(name)
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A command run in the project.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.path());
        command
    }

    /// No file the project holds names the repository: it was built from the packages
    /// alone. Build outputs and installed tools are left out; they may record where the
    /// packages came from.
    fn assert_outside_the_repository(&self, skip: &[&str]) {
        let repository = repository().to_string_lossy().into_owned();
        let mut dirs = vec![self.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if skip.contains(&name.as_str()) || name.ends_with(".wasm") {
                    continue;
                }
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(text) = std::fs::read_to_string(&path) {
                    assert!(
                        !text.contains(&repository),
                        "{} names the repository",
                        path.display()
                    );
                }
            }
        }
    }
}

/// The sample, twice, on one Redis: a holder that says "Success" and holds the lock for ten
/// minutes, and, once it has said so, a second host process that must fail to take it.
fn contend(component: &Path) {
    warm(component);
    let redis = RedisServer::start();
    let store = format!("lockstore={}", redis.url());
    let run = |hold_ms: &str| {
        let mut command = latchkey();
        command
            .args(["run", "--store", &store])
            .arg(component)
            .args(["--hold-ms", hold_ms])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let mut holder = Holder(run("600000").spawn().expect("latchkey starts"));
    holder.wait_for_line("Success");
    let second = run("0").output().unwrap();
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        lines(&second),
        ["Failed to lock my_file_name."],
        "{}: {second:?}",
        component.display()
    );
}

/// A `latchkey run` process, killed when the test is done with it.
struct Holder(Child);

impl Holder {
    /// Waits, at most [`PATIENCE`], for the process to print `line` on its stdout.
    fn wait_for_line(&mut self, line: &str) {
        let stdout = self.0.stdout.take().unwrap();
        let (said, heard) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if said.send(line.unwrap_or_default()).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut seen = vec![];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match heard.recv_timeout(left) {
                Ok(next) if next == line => return,
                Ok(next) => seen.push(next),
                Err(_) => break,
            }
        }
        let _ = self.0.kill();
        let mut stderr = String::new();
        let _ = self.0.stderr.take().unwrap().read_to_string(&mut stderr);
        panic!("the holder never said {line:?}: it said {seen:?}, and on stderr:\n{stderr}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The packaged Rust SDK, unpacked into `project` as a registry's download would be:
/// the path of its directory.
fn unpack_the_rust_sdk(project: &Project) -> PathBuf {
    let crate_file = project.download(&package("latchkey-guest-", ".crate"));
    succeed(project.command("tar").arg("xzf").arg(&crate_file));
    std::fs::remove_file(project.path().join(&crate_file)).unwrap();
    let name = crate_file
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    project.path().join(name)
}

/// Builds a Rust project for wasm32-wasip2 with its own target directory, and returns its
/// component. The SDK builds without a warning (with or without its `p3` feature): a guest
/// author sees none.
fn build_rust(project: &Project, component: &str) -> PathBuf {
    let out = succeed(
        project
            .command(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", project.path().join("target"))
            .env_remove("RUSTFLAGS"),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("warning"), "the build warned:\n{said}");
    project
        .path()
        .join("target/wasm32-wasip2/release")
        .join(component)
}

/// Every file under `dir`, by its path relative to `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![];
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(next) = dirs.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => dirs.push(path),
                false => files.push(path.strip_prefix(dir).unwrap().to_path_buf()),
            }
        }
    }
    files.sort();
    files
}

/// Each package carries the WIT it is built against, and that WIT is the repository's,
/// file for file and byte for byte: the Rust SDK's crate `wit/` (the host's and the SDK's
/// interface), the wheel's `latchkey/wit` and the tarball's `wit/` (the guest worlds of
/// `guest/wit`, with every package they use).
#[test]
fn every_package_carries_the_repositorys_wit() {
    let root = repository();
    let unpacked = Project::new();
    let crate_file = package("latchkey-guest-", ".crate");
    succeed(unpacked.command("tar").arg("xzf").arg(&crate_file));
    succeed(
        unpacked
            .command("tar")
            .arg("xzf")
            .arg(package("latchkey-guest-", ".tgz")),
    );
    succeed(
        unpacked
            .command("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(package("latchkey_guest-", ".whl"))
            .arg("wheel"),
    );
    let crate_dir = crate_file
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let shipped = [
        (
            format!("{crate_dir}/wit"),
            "wit",
            "v0.3.1/latchkey-lock.wit",
        ),
        (
            "wheel/latchkey/wit".to_owned(),
            "guest/wit",
            "deps/lock-0.3.1.wit",
        ),
        ("package/wit".to_owned(), "guest/wit", "deps/lock.wit"),
    ];
    for (inside, original, needed) in shipped {
        let inside = unpacked.path().join(inside);
        let files = files_under(&inside);
        assert!(
            files.contains(&PathBuf::from(needed)),
            "{} lacks {needed}",
            inside.display()
        );
        assert_eq!(
            files,
            files_under(&root.join(original)),
            "{} ships other files than {original}",
            inside.display()
        );
        for file in files {
            assert!(
                std::fs::read(inside.join(&file)).unwrap()
                    == std::fs::read(root.join(original).join(&file)).unwrap(),
                "{} differs from {original}/{}: run `make packages` again",
                inside.join(&file).display(),
                file.display()
            );
        }
    }
}

/// A Rust project depending on the packaged crate: `manifest` with `{SDK}` for the path of
/// the unpacked crate, and its one source file; built, checked to name nothing of the
/// repository, and run as the sample.
fn new_rust_guest(manifest: &str, source: (&str, &str), component: &str) {
    let project = Project::new();
    let sdk = unpack_the_rust_sdk(&project);
    let sdk = sdk.file_name().unwrap().to_string_lossy();
    project.write("Cargo.toml", &manifest.replace("{SDK}", &sdk));
    project.write(source.0, source.1);
    let component = build_rust(&project, component);
    project.assert_outside_the_repository(&["target"]);
    contend(&component);
}

/// A Rust guest for WASI 0.2, depending on `latchkey-guest` by a path to the packaged crate:
/// the demo `try-lock` as the project's `main.rs`.
#[test]
fn a_new_rust_guest_builds_from_the_packaged_crate() {
    new_rust_guest(
        r#"[package]
name = "dapr-sample"
version = "0.1.0"
edition = "2024"

[dependencies]
latchkey = { package = "latchkey-guest", path = "{SDK}" }
"#,
        (
            "src/main.rs",
            include_str!("../guest/demos/src/bin/try-lock.rs"),
        ),
        "dapr-sample.wasm",
    );
}

/// A WASI 0.3 Rust guest: the same crate with its `p3` feature, `wasip3` for the command.
#[test]
fn a_new_rust_p3_guest_builds_from_the_packaged_crate() {
    new_rust_guest(
        r#"[package]
name = "dapr-sample-p3"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
latchkey = { package = "latchkey-guest", path = "{SDK}", features = ["p3"] }
wasip3 = "=0.9.0"
"#,
        (
            "src/lib.rs",
            r#"use std::time::Duration;

use latchkey::p3::Store;

struct Sample;

wasip3::cli::command::export!(Sample);

impl wasip3::exports::cli::run::Guest for Sample {
    async fn run() -> Result<(), ()> {
        let args = wasip3::cli::environment::get_arguments();
        let hold_ms: u64 = args
            .iter()
            .skip_while(|arg| *arg != "--hold-ms")
            .nth(1)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(1000);
        let store = Store::open("lockstore").map_err(|err| eprintln!("{err}"))?;
        let lease = Duration::from_secs(60);
        match store.try_lock("my_file_name", lease).await.map_err(|err| eprintln!("{err}"))? {
            Some(_lock) => {
                println!("Success");
                wasip3::clocks::monotonic_clock::wait_for(hold_ms * 1_000_000).await;
            }
            None => println!("Failed to lock my_file_name."),
        }
        Ok(())
    }
}
"#,
        ),
        "dapr_sample_p3.wasm",
    );
}

/// The componentize-py version the repository's own Python guests are built with.
fn componentize_py_pin() -> String {
    let requirements = repository().join("guest/python/requirements.txt");
    std::fs::read_to_string(requirements)
        .unwrap()
        .lines()
        .find(|line| line.starts_with("componentize-py=="))
        .expect("componentize-py is pinned")
        .to_owned()
}

/// A Python project: a virtual environment holding the wheel and componentize-py, and
/// `app.py`, built by one componentize-py command for `world` with the venv active (as
/// `activate` sets `VIRTUAL_ENV` and `PATH`: componentize-py sees a venv's packages only
/// then).
fn build_python(app: &str, world: &str) -> (Project, PathBuf) {
    let project = Project::new();
    project.write("app.py", app);
    succeed(project.command("python3").args(["-m", "venv", "venv"]));
    let venv = project.path().join("venv");
    succeed(
        project
            .command(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .arg(project.download(&package("latchkey_guest-", ".whl")))
            .arg(componentize_py_pin()),
    );
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap()
    );
    succeed(
        project
            .command("sh")
            .arg("-c")
            .arg(format!(
                r#"componentize-py -q -d "$(python -m latchkey wit)" -w {world} componentize app -o app.wasm"#
            ))
            .env("VIRTUAL_ENV", &venv)
            .env("PATH", path)
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPATH"),
    );
    project.assert_outside_the_repository(&["venv", "__pycache__"]);
    let component = project.path().join("app.wasm");
    (project, component)
}

/// A Python guest for WASI 0.2, from the wheel: the demo `try_lock.py` as the project's
/// `app.py`.
#[test]
fn a_new_python_guest_builds_from_the_wheel() {
    let (_project, component) = build_python(
        include_str!("../guest/python/demos/try_lock.py"),
        "latchkey:guest/command",
    );
    contend(&component);
}

/// A WASI 0.3 Python guest, async, with `latchkey.aio` from the same wheel: the demo
/// `try_lock_p3.py`.
#[test]
fn a_new_python_p3_guest_builds_from_the_wheel() {
    let (_project, component) = build_python(
        include_str!("../guest/python/demos/try_lock_p3.py"),
        "latchkey:guest/command-p3",
    );
    contend(&component);
}

/// A JavaScript guest, from the npm tarball: installed beside componentize-js, imported by
/// its path under `node_modules` (componentize-js does not resolve bare package names), and
/// built against the WIT the package carries.
#[test]
fn a_new_javascript_guest_builds_from_the_npm_tarball() {
    let project = Project::new();
    project.write(
        "package.json",
        r#"{ "name": "dapr-sample", "type": "module", "private": true }"#,
    );
    project.write(
        "app.js",
        r#"import { Store, withLock } from './node_modules/latchkey-guest/latchkey.js';
import { getArguments } from 'wasi:cli/environment@0.2.12';
import { subscribeDuration } from 'wasi:clocks/monotonic-clock@0.2.12';

export const run = {
  run() {
    const argv = getArguments();
    const at = argv.indexOf('--hold-ms');
    const holdMs = at >= 0 ? Number(argv[at + 1]) : 1000;
    const store = Store.open('lockstore');
    const ran = withLock(store, 'my_file_name', { leaseMs: 60_000 }, () => {
      console.log('Success');
      subscribeDuration(BigInt(holdMs) * 1_000_000n).block();
      return true;
    });
    if (ran === null) console.log('Failed to lock my_file_name.');
  },
};
"#,
    );
    succeed(
        project
            .command("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg(Path::new(".").join(project.download(&package("latchkey-guest-", ".tgz"))))
            .args([
                "@bytecodealliance/componentize-js@0.23.0",
                "@bytecodealliance/preview2-shim@0.25.0",
            ]),
    );
    succeed(project.command("npx").args([
        "componentize-js",
        "--wit",
        "node_modules/latchkey-guest/wit",
        "--world-name",
        "latchkey:guest/command",
        "-d",
        "http",
        "-d",
        "fetch-event",
        "-o",
        "app.wasm",
        "app.js",
    ]));
    project.assert_outside_the_repository(&["node_modules"]);
    contend(&project.path().join("app.wasm"));
}

/// `wkg`, as `make packages` installs it.
fn wkg(project: &Project) -> Command {
    let mut command = project.command(repository().join("target/tools/bin/wkg"));
    command
        .env("WKG_CONFIG_FILE", project.path().join("wasm-pkg.toml"))
        .env("WKG_CACHE_DIR", project.path().join("cache"))
        .arg("--color")
        .arg("never");
    command
}

/// A guest project fetches `latchkey:lock` 0.2.1 and 0.3.1 with `wkg fetch`, as it fetches
/// wasi:http's, from a file registry (a copy of the one `make packages` publishes to, with
/// wasi:io beside them as wasi.dev would serve it). What arrives is what was published: its
/// text, built again, is the published package byte for byte.
#[test]
fn a_new_project_fetches_the_wit_packages_with_wkg() {
    let project = Project::new();
    succeed(
        project
            .command("cp")
            .arg("-R")
            .arg(packages().join("registry"))
            .arg("registry"),
    );
    project.write(
        "wasm-pkg.toml",
        &format!(
            "[namespace_registries]\nlatchkey = \"latchkey.local\"\nwasi = \"latchkey.local\"\n\n\
             [registry.\"latchkey.local\".local]\nroot = \"{}\"\n",
            project.path().join("registry").display()
        ),
    );
    // One version of a package per WIT directory: wkg 0.16 resolves one.
    for version in ["0.2.1", "0.3.1"] {
        let app = format!("app-{version}");
        project.write(
            &format!("{app}/wit/world.wit"),
            &format!(
                "package example:app;\n\nworld app {{ import latchkey:lock/locks@{version}; }}\n"
            ),
        );
        let mut fetch = wkg(&project);
        fetch.current_dir(project.path().join(&app));
        succeed(fetch.arg("fetch"));
        let fetched = project.path().join(format!(
            "{app}/wit/deps/latchkey-lock-{version}/package.wit"
        ));
        let text = std::fs::read_to_string(&fetched)
            .unwrap_or_else(|e| panic!("wkg fetched no {}: {e}", fetched.display()));
        assert!(
            text.starts_with(&format!("package latchkey:lock@{version};")),
            "{text}"
        );
        let again = format!("again-{version}");
        project.write(&format!("{again}/wit/package.wit"), &text);
        let mut build = wkg(&project);
        build.current_dir(project.path().join(&again));
        succeed(build.args(["build", "-o", "rebuilt.wasm"]));
        assert!(
            std::fs::read(project.path().join(&again).join("rebuilt.wasm")).unwrap()
                == std::fs::read(package(&format!("latchkey-lock-{version}"), ".wasm")).unwrap(),
            "the fetched latchkey:lock@{version} is not the published one"
        );
    }
    project.assert_outside_the_repository(&["cache"]);
}
