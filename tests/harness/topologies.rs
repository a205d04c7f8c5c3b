//! Redis' own distributed deployments, made of [`RedisServer`]s: a Cluster of three masters
//! (with or without replicas), and a primary with two replicas behind three Sentinels.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::PATIENCE;
use crate::netns::{Net, Node};
use crate::servers::RedisServer;

/// A Redis Cluster of three masters on loopback, with or without a replica each, made with
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    /// The nodes: masters, then replicas (until a failover changes who is which).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled masters, joins them, and waits until the cluster is up.
    pub fn start() -> Self {
        Self::start_with(0)
    }

    /// Three masters with a replica each, in sync; a master silent for two seconds is failed
    /// over to its replica.
    pub fn start_with_replicas() -> Self {
        Self::start_with(1)
    }

    fn start_with(replicas_per_master: usize) -> Self {
        // With replicas, fail over after two seconds of silence rather than Redis' 15 s
        // (with one, a loaded machine saw a second, spurious failover).
        let node_timeout = if replicas_per_master > 0 {
            "2000"
        } else {
            "15000"
        };
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas_per_master))
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    node_timeout,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(RedisServer::address).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {out:?}"
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        for replica in &cluster.nodes[3..] {
            replica.wait_for_reply(&["INFO", "replication"], "master_link_status:up");
        }
        // Every node must know who the replicas are (gossip takes a moment), or a store
        // checking the topology through one of them would see none.
        let replicas = 3 * replicas_per_master;
        for node in &cluster.nodes {
            let started = Instant::now();
            while node
                .cmd::<String>(&["CLUSTER", "NODES"])
                .lines()
                .filter(|l| l.contains("slave"))
                .count()
                < replicas
            {
                assert!(started.elapsed() < PATIENCE, "replicas unknown");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(RedisServer::address).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The index of the node that serves `key`'s hash slot, as the first live node sees it.
    pub fn owner_of(&self, key: &str) -> usize {
        let observer = self.nodes.iter().find(|n| n.is_up()).expect("a live node");
        let slot: i64 = observer.cmd(&["CLUSTER", "KEYSLOT", key]);
        let table: String = observer.cmd(&["CLUSTER", "NODES"]);
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields[8..].iter().any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                (low.parse::<i64>().unwrap()..=high.parse::<i64>().unwrap()).contains(&slot)
            });
            if serves {
                let port = fields[1].split([':', '@']).nth(1).unwrap();
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port().to_string() == port)
                    .unwrap();
            }
        }
        panic!("no node serves slot {slot}");
    }

    /// Moves `key`'s hash slot, with its keys, from its master to master `to`, as resharding
    /// does. Every master learns the new owner at once; a client's map of slots stays as it
    /// was until a redirect tells it.
    pub fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.owner_of(key);
        let slot = self.nodes[from]
            .cmd::<i64>(&["CLUSTER", "KEYSLOT", key])
            .to_string();
        let id = |node: usize| self.nodes[node].cmd::<String>(&["CLUSTER", "MYID"]);
        let (from_id, to_id) = (id(from), id(to));
        let _: () = self.nodes[to].cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        let _: () = self.nodes[from].cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> =
                self.nodes[from].cmd(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port().to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            let _: () = self.nodes[from].cmd(&migrate);
        }
        for master in self.masters() {
            let _: () = self.nodes[master].cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }

    /// The indexes of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&node| {
                self.nodes[node].is_up()
                    && self.nodes[node]
                        .cmd::<String>(&["INFO", "replication"])
                        .contains("role:master")
            })
            .collect()
    }

    /// The index of a replica of master `master`.
    pub fn replica_of(&self, master: usize) -> usize {
        let port = format!("master_port:{}", self.nodes[master].port());
        (0..self.nodes.len())
            .find(|&node| {
                self.nodes[node]
                    .cmd::<String>(&["INFO", "replication"])
                    .contains(&port)
            })
            .expect("a replica")
    }

    /// Waits until every node says the cluster is up.
    pub fn wait_until_ok(&self) {
        for node in &self.nodes {
            node.wait_for_reply(&["CLUSTER", "INFO"], "cluster_state:ok");
        }
    }

    /// Every key on every node, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.nodes.iter().flat_map(RedisServer::keys).collect();
        keys.sort();
        keys
    }
}

/// A primary with two replicas, watched by three Redis Sentinels (quorum 2) as service
/// `latchkey`: the smallest set in which a failover keeps a replica to confirm grants.
pub struct SentinelSet {
    /// The data servers; which is the primary changes on failover.
    pub servers: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<RedisServer>,
    /// On a test's net: the node of each server, in the order of `servers`, then the node
    /// of the sentinels. Dropped after the servers in them.
    pub nodes: Vec<Node>,
}

impl SentinelSet {
    /// The service name the sentinels know the primary by.
    pub const SERVICE: &str = "latchkey";

    /// How soon the sentinels of a failover test call a silent primary down. (With less, on
    /// a loaded machine, a just-promoted primary can be called down before the sentinels
    /// reach it, and fail over again.)
    pub const QUICK: Duration = Duration::from_secs(1);

    /// Starts the servers and sentinels, and waits until every sentinel knows both replicas
    /// and the other sentinels. They fail over after `down_after` of silence: [`Self::QUICK`]
    /// for a failover test, long for a test that must not see one.
    pub fn start(down_after: Duration) -> Self {
        let primary = RedisServer::start();
        let replicas = [primary.start_replica(), primary.start_replica()];
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_sentinel(Self::SERVICE, &primary, 2, down_after))
            .collect();
        for sentinel in &sentinels {
            sentinel.wait_for_reply(&["INFO", "sentinel"], "slaves=2,sentinels=3");
        }
        let mut servers = vec![primary];
        servers.extend(replicas);
        SentinelSet {
            servers,
            sentinels,
            nodes: Vec::new(),
        }
    }

    /// [`SentinelSet::start`] on `net`: each server in a node of its own, and the three
    /// sentinels in one more.
    pub fn start_on(net: &Net, down_after: Duration) -> Self {
        Self::start_on_as(net, down_after, false)
    }

    /// [`SentinelSet::start_on`], each server with a clock a test can move
    /// ([`RedisServer::shift_clock`]).
    pub fn start_on_with_clocks(net: &Net, down_after: Duration) -> Self {
        Self::start_on_as(net, down_after, true)
    }

    fn start_on_as(net: &Net, down_after: Duration, clocks: bool) -> Self {
        let nodes: Vec<Node> = (0..4).map(|_| net.node()).collect();
        let (primary, replicas) = if clocks {
            let primary = RedisServer::start_on_with_clock(&nodes[0], &[]);
            let replicas = [
                primary.start_replica_on_with_clock(&nodes[1]),
                primary.start_replica_on_with_clock(&nodes[2]),
            ];
            (primary, replicas)
        } else {
            let primary = RedisServer::start_on(&nodes[0], &[]);
            let replicas = [
                primary.start_replica_on(&nodes[1]),
                primary.start_replica_on(&nodes[2]),
            ];
            (primary, replicas)
        };
        let sentinels: Vec<RedisServer> = (0..3)
            .map(|n| {
                let port = 26379 + n;
                let service = Self::SERVICE;
                RedisServer::start_sentinel_on(&nodes[3], port, service, &primary, 2, down_after)
            })
            .collect();
        for sentinel in &sentinels {
            sentinel.wait_for_reply(&["INFO", "sentinel"], "slaves=2,sentinels=3");
        }
        let mut servers = vec![primary];
        servers.extend(replicas);
        SentinelSet {
            servers,
            sentinels,
            nodes,
        }
    }

    /// `redis+sentinel://` with every sentinel.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(RedisServer::address).collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), Self::SERVICE)
    }

    /// Server `n` of the set.
    pub fn server(&self, n: usize) -> &RedisServer {
        &self.servers[n]
    }

    /// The index of the server the sentinels name as primary.
    pub fn primary(&self) -> usize {
        self.primary_by(&self.sentinels[0])
            .expect("the primary is one of the set's servers")
    }

    /// The index of the server `sentinel` names as primary, if it names one of the set's.
    pub fn primary_by(&self, sentinel: &RedisServer) -> Option<usize> {
        let (host, port): (String, String) =
            sentinel.cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::SERVICE]);
        let address = format!("{host}:{port}");
        self.servers.iter().position(|s| s.address() == address)
    }

    /// Kills the primary (SIGKILL), waits up to [`PATIENCE`] until the sentinels have promoted a
    /// replica, and restarts the old primary empty as a replica of the new one — as an
    /// operator would, and as the sentinels would themselves some seconds later.
    pub fn fail_over(&mut self) {
        let old = self.primary();
        self.servers[old].crash();
        let started = Instant::now();
        while self.primary() == old {
            assert!(
                started.elapsed() < PATIENCE,
                "the sentinels did not fail over within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let new = self.servers[self.primary()].address();
        self.servers[old].restart_as_replica_of(&new);
    }
}
