//! Builds the guests in `guest/` (a workspace of their own) for wasm32-wasip2, so that one
//! `cargo test` runs everything; and a gRPC client of the host's Dapr API.
//!
//! The guests get their own target directory: a nested cargo on the outer build's directory
//! would wait forever for the lock the outer build holds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_owned();
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.ancestors().nth(4).unwrap().join("guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let status = Command::new(cargo)
        .current_dir(root.join("guest"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--workspace",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build are not for the guests.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building the guests for wasm32-wasip2 failed; is the target installed? \
         (rustup target add wasm32-wasip2)"
    );

    // The fault tests' clock that jumps (`harness/clock_shift.c`), preloaded into a
    // redis-server.
    let shim = out_dir.join("libclock_shift.so");
    let source = manifest.join("harness/clock_shift.c");
    let status = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&source)
        .status()
        .expect("a C compiler runs (cc)");
    assert!(status.success(), "compiling {} failed", source.display());
    println!(
        "cargo:rustc-env=LATCHKEY_CLOCK_SHIFT_LIB={}",
        shim.display()
    );
    println!("cargo:rerun-if-changed={}", source.display());

    // A gRPC client of Dapr's lock API, from the proto the host serves, for the tests and
    // B11 to call it as Dapr's SDKs do — and as they never would (bad input).
    let proto = root.join("host/proto");
    let descriptors = protox::compile(["dapr.proto"], [&proto]).expect("host/proto compiles");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)
        .expect("the gRPC client is generated");
    println!(
        "cargo:rerun-if-changed={}",
        proto.join("dapr.proto").display()
    );

    let guests = target_dir.join("wasm32-wasip2").join("release");
    println!("cargo:rustc-env=LATCHKEY_GUESTS={}", guests.display());
    let wasmtime_wasi = wasmtime_wasi_source(&root);
    println!(
        "cargo:rustc-env=LATCHKEY_HOST_WASI_WIT={}",
        wasmtime_wasi.join("src/p2/wit/deps").display()
    );
    println!(
        "cargo:rustc-env=LATCHKEY_HOST_WASI_P3_WIT={}",
        wasmtime_wasi.join("src/p3/wit/deps").display()
    );
    // Every file, not the folders: cargo notices a new file only through its folder's
    // own timestamp, which a file added deeper down does not change.
    for dir in ["guest", "wit"] {
        watch(&root.join(dir));
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest/Cargo.lock").display()
    );
}

/// Every file under `path`, but for what tools write there (npm's packages, Python's
/// bytecode), which no Rust guest is built from.
fn watch(path: &Path) {
    let name = path.file_name().unwrap_or_default();
    if name == "node_modules" || name == "__pycache__" {
        return;
    }
    println!("cargo:rerun-if-changed={}", path.display());
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            watch(&entry.unwrap().path());
        }
    }
}

/// Where the host's own wasmtime-wasi lies (in cargo's registry): its WASI WIT, 0.2 and 0.3,
/// is what a test checks the guests' copies in `wit/deps` and `guest/wit/deps` against.
fn wasmtime_wasi_source(root: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1"])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|package| package["name"] == "wasmtime-wasi")
        .and_then(|package| package["manifest_path"].as_str())
        .expect("wasmtime-wasi is a dependency");
    Path::new(manifest).parent().unwrap().to_owned()
}
