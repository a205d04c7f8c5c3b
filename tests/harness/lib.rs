//! # The test harness
//!
//! What every integration test shares. A newcomer reads this first, then the test file of
//! the concern at hand: `semantics.rs` (the contract, on every backend), `redis.rs` (Redis
//! specifics), `sandbox.rs` (hostile guests), `hosts.rs` and `faults.rs` (several processes,
//! crashes), `keepalive.rs`, `serve.rs`, `metrics.rs`, `cli.rs`, `languages.rs`.
//!
//! # Layout
//!
//! - [`servers`]: [`RedisServer`], a real `redis-server` on a free loopback port, started
//!   and stopped by the test that owns it (and crashed, restarted, paused when a test
//!   needs it, or its wall clock moved: [`RedisServer::start_with_clock`] preloads
//!   `clock_shift.c`, compiled by `build.rs`); also a replica of one, or a Redis Sentinel.
//! - [`topologies`]: [`RedisCluster`] (three masters) and [`SentinelSet`] (a primary, two
//!   replicas, three sentinels): Redis' own distributed deployments.
//! - [`fixture`]: [`Fixture`], one lock store for a test — in memory, on its own Redis,
//!   Cluster, Sentinel set or Redlock masters ([`Deployment`]) — and the apps built on it;
//!   `on_every_backend!` runs a test on each.
//! - [`fenced`]: [`fenced::FencedStore`], a resource that refuses writes with a fence below
//!   the highest it took — how a resource outlives a holder that lost its lock unawares.
//! - [`guests`]: the guests of `guest/` ([`guest`], built for wasm32-wasip2 by `build.rs`;
//!   [`polyglot_guest`], built by `make test`), and [`run`] / [`run_with`] / [`lockctl`],
//!   which run them through the real host library and capture their output.
//! - [`history`]: [`history::Workers`], host processes doing locked read-modify-writes on
//!   one counter while a test injects a fault, and the checker of the history of their
//!   grants (double grants, falling fences).
//! - [`leaders`]: [`leaders::History`], the history of an election as its `leader` demos
//!   print it, and its check: one leader at a time.
//! - [`netns`]: hosts of their own on one machine — [`netns::Net`], a bridge, and its
//!   [`netns::Node`]s, network namespaces — and partitions between them.
//! - [`processes`]: real `latchkey` processes — [`host_process`] (`latchkey run`),
//!   [`ServeProcess`] (`latchkey serve`) with [`post`], a real HTTP client — and what a test
//!   reads of them ([`lines`], [`signal`]). Each guest a process runs is compiled into the
//!   shared cache first ([`warm`]), so that no timing includes a compilation.
//!
//! Every wait for readiness is bounded by [`PATIENCE`], and ends as soon as what it waits
//! for is there; no test sleeps in the hope that something is ready.

use std::time::Duration;

/// How long a test waits for something to become ready — a server to answer, a guest to
/// take its lock, a process to exit — before it fails. Long enough for a cold start on a
/// loaded two-core machine; a wait ends as soon as what it waits for is there, so this
/// costs nothing when things work.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub mod dapr;
pub mod fenced;
pub mod fixture;
pub mod guests;
pub mod history;
pub mod leaders;
pub mod netns;
pub mod processes;
pub mod servers;
pub mod topologies;

pub use fixture::{Deployment, Fixture, redis_store, redlock_url};
pub use guests::{
    Run, guest, lockctl, lockctl_limited, polyglot_guest, run, run_with, script, spawn_lockctl,
};
pub use processes::{
    Answer, ServeProcess, host_process, latchkey, latchkey_path, lines, post, signal, warm,
};
pub use servers::{RedisServer, free_port};
pub use topologies::{RedisCluster, SentinelSet};
