//! The command line, declared with clap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Runs WebAssembly components that take distributed locks through latchkey:lock.
#[derive(Parser, Debug)]
#[command(name = "latchkey", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a wasi:cli command component, like `wasmtime run`.
    Run(RunArgs),
    /// Serve a wasi:http handler component, like `wasmtime serve`: a WASI 0.2 one with an
    /// instance per request, a WASI 0.3 one with reused instances.
    Serve(ServeArgs),
    /// Compile a component into the cache and say whether this host can run or serve it
    Check(CheckArgs),
    /// Serve Dapr's lock API (TryLockAlpha1, UnlockAlpha1) over HTTP and gRPC for one app,
    /// so that Dapr's own SDKs take the same locks as its guests
    Dapr(DaprArgs),
    /// See and free the locks a store holds, with the operator's credentials
    #[command(subcommand)]
    Locks(LocksCommand),
}

#[derive(Subcommand, Debug)]
pub enum LocksCommand {
    /// List every lock, permit and leadership held now: app, id, kind, fence, lease left,
    /// age, and a leader's value
    List(ListArgs),
    /// Free one lock, permit or leadership by force: its holder finds it lost, and the next
    /// grant's fence is higher
    Release(ReleaseArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: OperatorStore,

    /// Only the locks of this app
    #[arg(long, value_name = "ID")]
    pub app: Option<String>,

    /// One JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub store: OperatorStore,

    /// The app the lock belongs to
    #[arg(long, value_name = "ID")]
    pub app: String,

    /// Free permit N of the semaphore ID (as `locks list` shows it: `permit:N`)
    #[arg(long, value_name = "N", conflicts_with = "leadership")]
    pub permit: Option<u32>,

    /// Free the leadership of the election ID: its leader is deposed
    #[arg(long)]
    pub leadership: bool,

    /// The resource id of the lock, or the id of the semaphore or election
    pub resource_id: String,
}

/// A store as an operator reaches it: by URL, with the operator's credentials.
#[derive(Args, Debug)]
pub struct OperatorStore {
    /// The store's URL: redis://, rediss://, redis+unix://, redis+cluster://,
    /// redis+sentinel:// or redis+redlock:// (a memory store lives inside one latchkey
    /// process, out of reach)
    #[arg(long, value_name = "URL")]
    pub store: String,

    /// A file holding the store's password
    #[arg(long, value_name = "PATH", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,

    /// A host environment variable holding the store's password
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,

    /// The store's namespace, if its hosts give it one
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// Wait for N replicas to confirm a release, as grants do (Sentinel needs it)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub wait_replicas: u32,

    /// A store slower than this, for one step, is unavailable
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub store_timeout_ms: u64,
}

/// Dapr's lock API beside guests, from the same process and stores (`run`, `serve`).
#[derive(Args, Debug, Clone)]
pub struct DaprBeside {
    /// Also serve Dapr's HTTP lock API here, for the guests' app, on their stores
    #[arg(long, value_name = "HOST:PORT")]
    pub dapr_http_addr: Option<SocketAddr>,

    /// Also serve Dapr's gRPC lock API here, for the guests' app, on their stores
    #[arg(long, value_name = "HOST:PORT")]
    pub dapr_grpc_addr: Option<SocketAddr>,

    /// A file holding Dapr's API token, which every Dapr call must then carry; without
    /// it, the host's DAPR_API_TOKEN variable, if set
    #[arg(long, value_name = "PATH")]
    pub dapr_api_token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DaprArgs {
    #[command(flatten)]
    pub guest: GuestArgs,

    /// Serve Dapr's HTTP API here (daprd's default port)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:3500")]
    pub http_addr: SocketAddr,

    /// Serve Dapr's gRPC API here (daprd's default port)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50001")]
    pub grpc_addr: SocketAddr,

    /// A file holding Dapr's API token, which every call must then carry (`dapr-api-token`);
    /// without it, the host's DAPR_API_TOKEN variable, if set
    #[arg(long, value_name = "PATH")]
    pub dapr_api_token_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Compile for instances metered by fuel, as `--fuel` runs them
    #[arg(long)]
    pub fuel: bool,

    /// The component to check
    pub component: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub guest: GuestArgs,

    #[command(flatten)]
    pub dapr: DaprBeside,

    /// Run N copies of the component at once (competing consumers); with N > 1 every
    /// output line starts with the instance's number
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub instances: u32,

    /// The component to run
    pub component: PathBuf,

    /// Arguments for the guest
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub guest: GuestArgs,

    #[command(flatten)]
    pub dapr: DaprBeside,

    /// The address to listen on
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Serve at most N requests at once; a request beyond them gets 503 and Retry-After
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_concurrent_requests: u32,

    /// On SIGINT or SIGTERM, let requests in flight finish for this long before they are
    /// stopped (their locks are released either way)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Serve at most N connections at once; more wait to be accepted until one closes
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Close a connection that takes longer than this to send a request's headers, or sits
    /// idle this long between requests
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,

    /// Serve at most N requests, in all, with one instance of a WASI 0.3 handler; then
    /// retire it (a WASI 0.2 handler gets a fresh instance per request)
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_instance_reuse: u32,

    /// Serve at most N requests at once with one instance of a WASI 0.3 handler
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_instance_concurrency: u32,

    /// The component to serve (a wasi:http handler, WASI 0.2 or 0.3)
    pub component: PathBuf,
}

/// What `run` and `serve` share: where the locks are, what the guest may do, and the
/// limits on each instance.
#[derive(Args, Debug, Clone)]
pub struct GuestArgs {
    /// A TOML file of stores and per-app policy and limits (see the book's configuration reference); flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The app the locks belong to; apps never share locks [default: the component's file stem]
    #[arg(long, value_name = "ID")]
    pub app_id: Option<String>,

    // The URL forms come from the library's one table of them.
    #[arg(long = "store", value_name = "NAME=URL", value_parser = store_url,
          help = format!("Offer a lock store to the guest as NAME: URL is {}. Repeatable \
                          [default: lockstore=memory]", latchkey_host::store::url_forms()))]
    pub stores: Vec<(String, String)>,

    /// Read the password of store NAME from a file, to keep it off the command line. Repeatable
    #[arg(long = "password-file", value_name = "NAME=PATH", value_parser = key_value)]
    pub password_files: Vec<(String, String)>,

    /// Read the password of store NAME from the host's environment variable VAR. Repeatable
    #[arg(long = "password-env", value_name = "NAME=VAR", value_parser = key_value)]
    pub password_envs: Vec<(String, String)>,

    /// Grant locks of store NAME only once N replicas confirm them (Redis WAIT); needed for
    /// a primary with replicas and for redis+sentinel:// stores. Repeatable
    #[arg(long = "wait-replicas", value_name = "NAME=N", value_parser = key_count)]
    pub wait_replicas: Vec<(String, u32)>,

    /// How long a store may take to answer before a call fails as `unavailable`, in ms
    /// [default: 2000]
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub store_timeout_ms: Option<u64>,

    /// Stop each instance after this long, time blocked on locks included (e.g. 5s, 1m);
    /// its locks are released. Also --timeout, its old name
    #[arg(long, alias = "timeout", value_name = "DURATION", value_parser = positive_duration)]
    pub deadline: Option<Duration>,

    /// Keep-alive renews one lock's lease for this long at most (e.g. 10m); then the lease
    /// ends as usual [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub max_keep_alive: Option<Duration>,

    /// Cap each instance's linear memory (e.g. 64MiB); growing past it stops the instance
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_memory: Option<u64>,

    /// Give each instance this much fuel (roughly, wasm instructions); running out stops it
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,

    /// Let each instance hold at most N handles at once (stores, locks, pollables, WASI's);
    /// past them a call is limit-exceeded, or the instance stops [default: 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_handles: Option<u64>,

    /// Compile the component even if wasmtime's cache (~/.cache/wasmtime) has it
    #[arg(long)]
    pub no_cache: bool,

    /// Let the guest open network sockets, resolve names and send HTTP requests (denied by
    /// default)
    #[arg(long)]
    pub allow_network: bool,

    /// Give the guest a host directory, at GUEST (default: the same path). Repeatable
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    pub dirs: Vec<String>,

    /// Serve metrics of every lock operation in Prometheus' text format at
    /// http://HOST:PORT/metrics (off unless given)
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<SocketAddr>,

    /// Set an environment variable in the guest; nothing is inherited. Repeatable
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = key_value)]
    pub envs: Vec<(String, String)>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected NAME=VALUE".to_owned()),
    }
}

/// `NAME=URL`, the name of letters, digits, `.`, `_` and `-` — so that a URL given
/// without a name, whose query holds a `=`, is not taken for one.
fn store_url(s: &str) -> Result<(String, String), String> {
    let named = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    match s.split_once('=') {
        Some((name, url)) if named(name) => Ok((name.to_owned(), url.to_owned())),
        _ => Err("expected NAME=VALUE, the NAME of letters, digits, '.', '_' or '-'".to_owned()),
    }
}

fn key_count(s: &str) -> Result<(String, u32), String> {
    let (name, count) = key_value(s)?;
    let count = count
        .parse()
        .map_err(|_| format!("expected NAME=N with N a whole number, got {s:?}"))?;
    Ok((name, count))
}

fn duration(s: &str) -> Result<Duration, String> {
    latchkey_host::config::parse_duration(s)
}

/// A duration for which zero is no setting but a mistake: a deadline, a timeout.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        Duration::ZERO => Err(format!("{s:?} must be longer than zero")),
        positive => Ok(positive),
    }
}

fn size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e}; write e.g. 64MiB"))
}
