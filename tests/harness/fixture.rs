//! [`Fixture`]: the lock store of one test, on a deployment started for it, and
//! `on_every_backend!`, which runs one test on every kind of store.

use std::time::Duration;

use latchkey_host::{LockCtxBuilder, LockStore, StoreSettings};

use crate::servers::RedisServer;
use crate::topologies::{RedisCluster, SentinelSet};

/// The lock store of one test, and the deployment behind it.
pub struct Fixture {
    /// The store every app of the test uses.
    pub store: LockStore,
    /// What serves it.
    pub deployment: Deployment,
}

/// The servers behind a [`Fixture`]'s store, started for the test and stopped with it.
pub enum Deployment {
    /// The host's own memory: no server.
    Memory,
    /// One Redis server.
    Redis(RedisServer),
    /// A three-master Redis Cluster.
    Cluster(RedisCluster),
    /// A primary and two replicas behind three sentinels.
    Sentinel(SentinelSet),
    /// Three independent Redlock masters.
    Redlock(Vec<RedisServer>),
}

impl Fixture {
    /// A store in the host's memory.
    pub fn in_memory() -> Self {
        Fixture {
            store: LockStore::memory("lockstore"),
            deployment: Deployment::Memory,
        }
    }

    /// A store on a Redis server of the test's own.
    pub fn on_redis() -> Self {
        let server = RedisServer::start();
        Fixture {
            store: redis_store(&server.url(), Duration::from_secs(2)),
            deployment: Deployment::Redis(server),
        }
    }

    /// A store on a three-master Redis Cluster of the test's own.
    pub fn on_cluster() -> Self {
        let cluster = RedisCluster::start();
        Fixture {
            store: redis_store(&cluster.url(), Duration::from_secs(2)),
            deployment: Deployment::Cluster(cluster),
        }
    }

    /// A store on a primary and two replicas of the test's own, found through three
    /// sentinels that do not fail over during the test; every grant waits for one replica.
    pub fn on_sentinel() -> Self {
        Self::on_sentinel_failing_over_after(Duration::from_secs(60))
    }

    /// [`Fixture::on_sentinel`], with sentinels that fail over after `down_after` of
    /// silence.
    pub fn on_sentinel_failing_over_after(down_after: Duration) -> Self {
        let set = SentinelSet::start(down_after);
        let mut settings = StoreSettings::new(set.url());
        settings.wait_replicas = 1;
        let store = latchkey_host::open("lockstore", &settings).expect("a valid Sentinel URL");
        Fixture {
            store,
            deployment: Deployment::Sentinel(set),
        }
    }

    /// A Redlock store on three independent masters of the test's own.
    pub fn on_redlock() -> Self {
        let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
        Fixture {
            store: redis_store(&redlock_url(&masters), Duration::from_secs(2)),
            deployment: Deployment::Redlock(masters),
        }
    }

    /// The app `app_id`, offered this fixture's store, `lockstore`.
    pub fn app(&self, app_id: &str) -> LockCtxBuilder {
        let mut app = LockCtxBuilder::new(app_id);
        app.store(self.store.clone());
        app
    }

    /// The Redis server behind the store; panics for other deployments.
    pub fn redis(&self) -> &RedisServer {
        match &self.deployment {
            Deployment::Redis(server) => server,
            _ => panic!("the fixture is not on one Redis server"),
        }
    }

    /// [`Fixture::redis`], to restart or crash it.
    pub fn redis_mut(&mut self) -> &mut RedisServer {
        match &mut self.deployment {
            Deployment::Redis(server) => server,
            _ => panic!("the fixture is not on one Redis server"),
        }
    }

    /// The Redis Cluster behind the store; panics for other deployments.
    pub fn cluster(&self) -> &RedisCluster {
        match &self.deployment {
            Deployment::Cluster(cluster) => cluster,
            _ => panic!("the fixture is not on a Redis Cluster"),
        }
    }

    /// The Sentinel set behind the store; panics for other deployments.
    pub fn sentinel_mut(&mut self) -> &mut SentinelSet {
        match &mut self.deployment {
            Deployment::Sentinel(set) => set,
            _ => panic!("the fixture is not behind Sentinel"),
        }
    }

    /// The Redlock masters behind the store; panics for other deployments.
    pub fn redlock(&mut self) -> &mut [RedisServer] {
        match &mut self.deployment {
            Deployment::Redlock(masters) => masters,
            _ => panic!("the fixture is not on Redlock masters"),
        }
    }
}

/// `redis+redlock://` over `masters`.
pub fn redlock_url(masters: &[RedisServer]) -> String {
    let hosts: Vec<String> = masters.iter().map(RedisServer::address).collect();
    format!("redis+redlock://{}", hosts.join(","))
}

/// The Redis store `lockstore` at `url`, with the given call timeout.
pub fn redis_store(url: &str, timeout: Duration) -> LockStore {
    let mut settings = StoreSettings::new(url);
    settings.timeout = timeout;
    latchkey_host::open("lockstore", &settings).expect("a valid Redis URL")
}

/// Defines each test once and runs it on every backend: `memory::name`, `redis::name`,
/// `cluster::name` (a three-master Redis Cluster), `sentinel::name` (a primary with two
/// replicas behind three sentinels) and `redlock::name` (three independent masters).
#[macro_export]
macro_rules! on_every_backend {
    ($($tests:tt)*) => {
        $crate::on_backends! {
            [memory => in_memory, redis => on_redis, cluster => on_cluster,
             sentinel => on_sentinel, redlock => on_redlock]
            $($tests)*
        }
    };
}

/// Defines each test once and runs it in memory and on one Redis server: `memory::name`,
/// `redis::name`. For behaviour of the host's own, which no backend changes.
#[macro_export]
macro_rules! on_memory_and_redis {
    ($($tests:tt)*) => {
        $crate::on_backends! { [memory => in_memory, redis => on_redis] $($tests)* }
    };
}

/// Defines each test once and runs it on each backend listed, as `MODULE => FIXTURE`: a
/// module of tests per backend, each test made by that [`Fixture`] constructor.
#[macro_export]
macro_rules! on_backends {
    ([$($module:ident => $make:ident),*]
     $($(#[$doc:meta])* async fn $name:ident($fx:ident: &Fixture) $body:block)*) => {
        $( $(#[$doc])* async fn $name($fx: &$crate::Fixture) $body )*
        $crate::on_backends!(@modules [$($module => $make),*] [$($name)*]);
    };
    (@modules [$($module:ident => $make:ident),*] $names:tt) => {
        $( $crate::on_backends!(@module $module $make $names); )*
    };
    (@module $module:ident $make:ident [$($name:ident)*]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(&$crate::Fixture::$make()).await
                }
            )*
        }
    };
}
