//! [`Runner`]: the engine and the linker every guest runs on, whatever its world; and
//! [`Program`]: a component compiled, checked against what the host provides, and
//! pre-instantiated, with the [`World`] it was found to be.
//!
//! Commands ([`crate::run`]) and HTTP handlers ([`crate::serve`]) differ only in how an
//! instance is called and when it ends: both are loaded and prepared here, on one linker
//! that holds WASI, `wasi:http` and every version of `latchkey:lock`.

use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::sandbox::{EngineOptions, GuestState, Sandbox};

/// Compiles and prepares components of every world latchkey runs, on one engine.
pub struct Runner {
    pub(crate) sandbox: Sandbox,
    linker: Linker<GuestState>,
}

/// A component ready to be instantiated many times, as the world it exports.
#[derive(Clone)]
pub struct Program {
    entry: Entry,
}

/// How a program is entered.
#[derive(Clone)]
pub(crate) enum Entry {
    Command(CommandPre<GuestState>),
    Proxy(ProxyPre<GuestState>),
}

/// The world a program exports: how the host calls it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// A `wasi:cli` command (it exports `wasi:cli/run`): run once per instance, by
    /// [`Runner::run`].
    Command,
    /// A `wasi:http` handler (it exports `wasi:http/incoming-handler`): one instance per
    /// request, by [`Runner::handler`].
    Proxy,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Command => "a wasi:cli command",
            World::Proxy => "a wasi:http handler",
        })
    }
}

impl Runner {
    /// A runner on an engine with the default [`EngineOptions`].
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_options(EngineOptions::default())
    }

    /// Like [`Runner::new`], also metering fuel so that [`GuestLimits::fuel`] applies.
    /// Metering slows guests down; use it only if you set fuel.
    pub fn metering_fuel() -> wasmtime::Result<Self> {
        Self::with_options(EngineOptions {
            meter_fuel: true,
            ..EngineOptions::default()
        })
    }

    /// A runner on an engine set up by `options`. Size its pool
    /// ([`EngineOptions::pooled_instances`]) to the most instances run at once.
    ///
    /// Guests get all of WASI p2 and `wasi:http`, as `wasmtime serve -Scli` gives them, so
    /// that files, variables, sockets and outgoing requests can be granted; they have none
    /// unless their `WasiCtx` (and [`GuestState::allow_outgoing_http`]) does.
    pub fn with_options(options: EngineOptions) -> wasmtime::Result<Self> {
        let sandbox = Sandbox::new(options)?;
        let mut linker = Linker::new(&sandbox.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::add_to_linker(&mut linker)?;
        Ok(Runner { sandbox, linker })
    }

    /// The engine components must be compiled for.
    pub fn engine(&self) -> &Engine {
        &self.sandbox.engine
    }

    /// Compiles the component at `path` and prepares it: see [`Runner::prepare`].
    pub fn load(&self, path: &Path) -> wasmtime::Result<Program> {
        self.prepare(&Component::from_file(self.engine(), path)?)
    }

    /// Checks that `component` imports nothing this host does not provide and exports a
    /// world it runs — `wasi:cli/run` or `wasi:http/incoming-handler` — and
    /// pre-instantiates it.
    pub fn prepare(&self, component: &Component) -> wasmtime::Result<Program> {
        let pre = self.linker.instantiate_pre(component)?;
        let entry = match CommandPre::new(pre.clone()) {
            Ok(command) => Entry::Command(command),
            Err(_) => match ProxyPre::new(pre) {
                Ok(proxy) => Entry::Proxy(proxy),
                Err(_) => wasmtime::bail!(
                    "it exports neither wasi:cli/run (a command) nor \
                     wasi:http/incoming-handler (an HTTP handler)"
                ),
            },
        };
        Ok(Program { entry })
    }
}

impl Program {
    /// The world the component exports.
    pub fn world(&self) -> World {
        match self.entry {
            Entry::Command(_) => World::Command,
            Entry::Proxy(_) => World::Proxy,
        }
    }

    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }
}
