//! Hosts of their own on one machine: network namespaces on a bridge, made and removed by
//! the test that uses them, and partitions between them.
//!
//! A [`Net`] is a bridge in the test's namespace with a /24 of its own; each [`Node`] is a
//! network namespace joined to it by a veth pair, with an address of its own. Redis servers
//! and `latchkey` processes run in nodes; the test reaches every node through the bridge.
//! A partition drops packets silently, as a cut cable or a dead switch does — no reset, no
//! error, only silence until a timeout: [`Net::isolate`] takes a node's link down, and
//! [`Net::cut`] drops the packets between two nodes with nftables rules in each.
//!
//! It needs root (or CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables): `make test`
//! installs both. Without them a test fails at once, saying what is missing.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A bridge and its subnet, `10.77.S.0/24`: the test's own network.
pub struct Net {
    id: String,
    subnet: u8,
    bridge: String,
    next: AtomicU32,
}

/// A network namespace on a [`Net`], at `10.77.S.N`.
pub struct Node {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub netns: String,
    /// Its address on the net.
    pub ip: String,
    /// The root side of its veth pair, on the bridge.
    link: String,
}

/// Runs `ip ARGS...` (or any `program`), panicking with what it said if it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run `{program}` ({err}): the partition tests need iproute2 and \
                 nftables (apt-get install iproute2 nftables, or make test)"
            )
        });
    assert!(
        out.status.success(),
        "`{program} {}` failed: {} (the partition tests need root, or CAP_NET_ADMIN)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `args` inside `netns`.
fn run_in(netns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", netns];
    all.extend_from_slice(args);
    run("ip", &all);
}

impl Net {
    /// A new bridge with a subnet of its own. Namespaces and bridges a killed test run left
    /// behind are removed first.
    pub fn new() -> Self {
        static NETS: AtomicU32 = AtomicU32::new(0);
        remove_leftovers();
        let n = NETS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Short enough for a link name (15 bytes) with the prefixes below.
        let id = format!("{:x}{n:x}", pid % 0x10000);
        let subnet = ((pid as usize * 7 + n as usize) % 200 + 20) as u8;
        let bridge = format!("lkb{id}");
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        let net = Net {
            id,
            subnet,
            bridge,
            next: AtomicU32::new(10),
        };
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.address(1)),
                "dev",
                &net.bridge,
            ],
        );
        run("ip", &["link", "set", &net.bridge, "up"]);
        net
    }

    fn address(&self, host: u32) -> String {
        format!("10.77.{}.{host}", self.subnet)
    }

    /// A new node: a namespace with loopback and one link to the bridge.
    pub fn node(&self) -> Node {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let netns = format!("lk{}n{n}", self.id);
        let link = format!("lk{}v{n}", self.id);
        let peer = format!("lk{}p{n}", self.id);
        let ip = self.address(n);
        run("ip", &["netns", "add", &netns]);
        let node = Node {
            netns,
            ip,
            link: link.clone(),
        };
        run(
            "ip",
            &["link", "add", &link, "type", "veth", "peer", "name", &peer],
        );
        run("ip", &["link", "set", &peer, "netns", &node.netns]);
        run("ip", &["link", "set", &link, "master", &self.bridge]);
        run("ip", &["link", "set", &link, "up"]);
        run_in(
            &node.netns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/24", node.ip),
                "dev",
                &peer,
            ],
        );
        run_in(&node.netns, &["ip", "link", "set", &peer, "up"]);
        run_in(&node.netns, &["ip", "link", "set", "lo", "up"]);
        // The rules of `cut` go in this table; empty, it lets everything through.
        run_in(&node.netns, &["nft", "add", "table", "inet", "partition"]);
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            let spec = format!("{{ type filter hook {hook} priority 0; }}");
            run_in(
                &node.netns,
                &["nft", "add", "chain", "inet", "partition", chain, &spec],
            );
        }
        node
    }

    /// Cuts `node` off from every other node and from the test: its link goes down.
    pub fn isolate(&self, node: &Node) {
        run("ip", &["link", "set", &node.link, "down"]);
    }

    /// Joins an isolated `node` to the net again.
    pub fn rejoin(&self, node: &Node) {
        run("ip", &["link", "set", &node.link, "up"]);
    }

    /// Drops every packet between `a` and `b`, both ways; each still reaches the others.
    pub fn cut(&self, a: &Node, b: &Node) {
        for (here, there) in [(a, b), (b, a)] {
            for (chain, field) in [("in", "saddr"), ("out", "daddr")] {
                run_in(
                    &here.netns,
                    &[
                        "nft",
                        "add",
                        "rule",
                        "inet",
                        "partition",
                        chain,
                        "ip",
                        field,
                        &there.ip,
                        "drop",
                    ],
                );
            }
        }
    }

    /// Undoes every [`Net::cut`] of `node`'s (the rules in its namespace and in the others').
    pub fn mend(&self, nodes: &[&Node]) {
        for node in nodes {
            for chain in ["in", "out"] {
                run_in(
                    &node.netns,
                    &["nft", "flush", "chain", "inet", "partition", chain],
                );
            }
        }
    }
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Node {
    /// `program` to run inside this node.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }
}

impl Drop for Node {
    /// The namespace goes, and its veth pair with it. Whatever runs in it must have been
    /// stopped first: declare the node before the servers and processes it holds, so that
    /// they are dropped before it.
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes the namespaces and bridges of test processes that are gone (killed before their
/// nets were dropped): their subnets would clash with new ones.
fn remove_leftovers() {
    let alive = |id: &str| {
        // The id starts with this process's pid modulo 0x10000, in hex: ours are alive.
        id.starts_with(&format!("{:x}", std::process::id() % 0x10000))
    };
    let listed = Command::new("ip").args(["netns", "list"]).output();
    for line in listed
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
    {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(rest) = name.strip_prefix("lk")
            && let Some((id, _)) = rest.split_once('n')
            && !alive(id)
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output();
    for line in links
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
    {
        let name = line.split(':').nth(1).unwrap_or_default().trim();
        if let Some(id) = name.strip_prefix("lkb")
            && !alive(id)
        {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}
