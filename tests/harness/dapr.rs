//! Dapr applications against `latchkey dapr`: [`DaprProcess`], the endpoint on free ports;
//! [`dapr_python`], Dapr's own Python SDK (gRPC), and [`dapr_node`], its JavaScript SDK
//! (HTTP) — each pinned in `tests/clients`, installed by `make dapr-clients` — running the
//! same steps (`tests/clients/*/lockctl.*`) against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{PATIENCE, free_port, latchkey};

/// `latchkey dapr ARGS...` on free loopback ports, once both accept connections.
pub struct DaprProcess {
    child: Child,
    /// The HTTP port.
    pub http_port: u16,
    /// The gRPC port.
    pub grpc_port: u16,
}

impl DaprProcess {
    /// `latchkey dapr --http-addr ... --grpc-addr ... ARGS...`, with `env` set.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let (http_port, grpc_port) = (free_port(), free_port());
        let child = latchkey()
            .arg("dapr")
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(args)
            .env_remove("DAPR_API_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("latchkey starts");
        let mut endpoint = DaprProcess {
            child,
            http_port,
            grpc_port,
        };
        let started = Instant::now();
        for port in [http_port, grpc_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = endpoint.child.try_wait() {
                    panic!("latchkey dapr exited with {status}");
                }
                assert!(
                    started.elapsed() < PATIENCE,
                    "latchkey dapr did not listen within {PATIENCE:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        endpoint
    }

    /// How many file descriptors the endpoint's process has open: its connections among
    /// them.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the endpoint runs")
            .count()
    }

    /// Its HTTP and gRPC ports, for [`dapr_python`].
    pub fn ports(&self) -> (u16, u16) {
        (self.http_port, self.grpc_port)
    }

    /// `http://127.0.0.1:PORT{path}` of the HTTP API.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }
}

impl Drop for DaprProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python of the clients' virtual environment.
fn clients_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = root.join("target/clients-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make dapr-clients` installs Dapr's SDKs (make test does)",
        python.display()
    );
    python
}

/// Runs `steps` (`lock STORE ID OWNER EXPIRY`, `unlock STORE ID OWNER`) through Dapr's
/// Python SDK against the endpoint on `(http, grpc)` ports, with `token` as its
/// DAPR_API_TOKEN; its output lines.
pub fn dapr_python(ports: (u16, u16), token: Option<&str>, steps: &str) -> Vec<String> {
    let (http_port, grpc_port) = ports;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/lockctl.py");
    let mut command = Command::new(clients_python());
    command
        .arg(script)
        .args(steps.split_whitespace())
        .env("DAPR_HTTP_PORT", http_port.to_string())
        .env("DAPR_GRPC_PORT", grpc_port.to_string())
        .env("DAPR_RUNTIME_HOST", "127.0.0.1")
        .env_remove("DAPR_API_TOKEN")
        .env("DAPR_HEALTH_TIMEOUT", PATIENCE.as_secs().to_string());
    if let Some(token) = token {
        command.env("DAPR_API_TOKEN", token);
    }
    let out = command.output().expect("python runs");
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs `steps` through Dapr's JavaScript SDK (over HTTP) against the endpoint on `http_port`,
/// with `token` as its DAPR_API_TOKEN; its output lines.
pub fn dapr_node(http_port: u16, token: Option<&str>, steps: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js");
    assert!(
        dir.join("node_modules/@dapr/dapr").exists(),
        "Dapr's JavaScript SDK is missing: `make dapr-clients` installs it (make test does)"
    );
    let mut command = Command::new("node");
    command
        .current_dir(&dir)
        .arg("lockctl.mjs")
        .args(steps.split_whitespace())
        .env("DAPR_HTTP_PORT", http_port.to_string())
        .env_remove("DAPR_API_TOKEN");
    if let Some(token) = token {
        command.env("DAPR_API_TOKEN", token);
    }
    let out = command.output().expect("node runs");
    assert!(
        out.status.success(),
        "the JavaScript client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Dapr's lock API as its gRPC service declares it (`host/proto/dapr.proto`), as a client.
pub mod proto {
    tonic::include_proto!("dapr.proto.runtime.v1");
}

/// A raw gRPC client of the endpoint, blocking, on a runtime of its own: it sends what an
/// SDK would never (an expiry of 0, an empty owner) and calls methods latchkey does not serve.
pub struct GrpcClient {
    runtime: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    token: Option<String>,
}

impl GrpcClient {
    /// Connects to the endpoint's gRPC `port`, sending `token` as `dapr-api-token` if given.
    pub fn connect(port: u16, token: Option<&str>) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(PATIENCE)
            .timeout(PATIENCE);
        let channel = runtime
            .block_on(endpoint.connect())
            .expect("the gRPC endpoint accepts a connection");
        GrpcClient {
            runtime,
            channel,
            token: token.map(str::to_owned),
        }
    }

    /// `TryLockAlpha1`: whether the lock was granted, or the call's status.
    pub fn try_lock(
        &self,
        store: &str,
        id: &str,
        owner: &str,
        expiry_in_seconds: i32,
    ) -> Result<bool, tonic::Status> {
        let request = proto::TryLockRequest {
            store_name: store.into(),
            resource_id: id.into(),
            lock_owner: owner.into(),
            expiry_in_seconds,
        };
        let mut client = proto::dapr_client::DaprClient::new(self.channel.clone());
        let answer = self
            .runtime
            .block_on(client.try_lock_alpha1(self.request(request)))?;
        Ok(answer.into_inner().success)
    }

    /// `UnlockAlpha1`: Dapr's status number, or the call's status.
    pub fn unlock(&self, store: &str, id: &str, owner: &str) -> Result<i32, tonic::Status> {
        let request = proto::UnlockRequest {
            store_name: store.into(),
            resource_id: id.into(),
            lock_owner: owner.into(),
        };
        let mut client = proto::dapr_client::DaprClient::new(self.channel.clone());
        let answer = self
            .runtime
            .block_on(client.unlock_alpha1(self.request(request)))?;
        Ok(answer.into_inner().status)
    }

    /// Calls `/dapr.proto.runtime.v1.Dapr/{method}` with an empty message, as a client of a
    /// method latchkey does not declare would: its status.
    pub fn call_other(&self, method: &str) -> tonic::Status {
        let path = format!("/dapr.proto.runtime.v1.Dapr/{method}");
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let call = async {
            grpc.ready().await.expect("the channel is ready");
            grpc.unary::<_, proto::GetMetadataResponse, _>(
                self.request(proto::GetMetadataRequest {}),
                path.parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
        };
        match self.runtime.block_on(call) {
            Ok(_) => panic!("{method} answered"),
            Err(status) => status,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("dapr-api-token", token.parse().unwrap());
        }
        request
    }
}
