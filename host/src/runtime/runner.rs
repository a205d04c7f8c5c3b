//! [`Runner`]: the engine and the linker every guest runs on, whatever its world; and
//! [`Program`]: a component compiled, checked against what the host provides, and
//! pre-instantiated, with the [`World`] it was found to be.
//!
//! Commands ([`Runner::run`]) and HTTP handlers ([`crate::runtime::serve`]) differ only in how an
//! instance is called and when it ends: both are loaded and prepared here, on one linker
//! that holds WASI, `wasi:http` and every version of `latchkey:lock`.

use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p3::bindings::CommandPre as CommandPreP3;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::runtime::sandbox::{EngineOptions, GuestState, Sandbox};

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
    CommandP3(CommandPreP3<GuestState>),
    ServiceP3(ServicePre<GuestState>),
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
    /// A WASI 0.3 `wasi:cli` command (it exports `wasi:cli/run@0.3.0`): run once per
    /// instance, by [`Runner::run`], its tasks concurrently.
    CommandP3,
    /// A WASI 0.3 `wasi:http` handler (it exports `wasi:http/handler@0.3.0`): one instance
    /// serves many requests, one after another and at once, by [`Runner::handler`].
    ServiceP3,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Command => "a wasi:cli command",
            World::Proxy => "a wasi:http handler",
            World::CommandP3 => "a WASI 0.3 wasi:cli command",
            World::ServiceP3 => "a WASI 0.3 wasi:http handler",
        })
    }
}

impl Runner {
    /// A runner on an engine with the default [`EngineOptions`].
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_options(EngineOptions::default())
    }

    /// Like [`Runner::new`], also metering fuel so that [`GuestLimits::fuel`](crate::GuestLimits::fuel) applies.
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
    /// Guests get all of WASI and `wasi:http`, 0.2 and 0.3, as `wasmtime serve -Scli` gives
    /// them, so that files, variables, sockets and outgoing requests can be granted; they
    /// have none unless their `WasiCtx` (and [`GuestState::allow_outgoing_http`]) does. Both
    /// versions, because a WASI 0.3 guest built with Rust's std imports 0.2 as well.
    pub fn with_options(options: EngineOptions) -> wasmtime::Result<Self> {
        let sandbox = Sandbox::new(options)?;
        let mut linker = Linker::new(&sandbox.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::p2::add_to_linker(&mut linker)?;
        crate::p3::add_to_linker(&mut linker)?;
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
    /// world it runs — `wasi:cli/run` or `wasi:http/incoming-handler` of WASI 0.2, or
    /// `wasi:cli/run` or `wasi:http/handler` of WASI 0.3 — and pre-instantiates it.
    pub fn prepare(&self, component: &Component) -> wasmtime::Result<Program> {
        let pre = self.linker.instantiate_pre(component)?;
        let entry = if let Ok(command) = CommandPre::new(pre.clone()) {
            Entry::Command(command)
        } else if let Ok(proxy) = ProxyPre::new(pre.clone()) {
            Entry::Proxy(proxy)
        } else if let Ok(command) = CommandPreP3::new(pre.clone()) {
            Entry::CommandP3(command)
        } else if let Ok(service) = ServicePre::new(pre) {
            Entry::ServiceP3(service)
        } else {
            wasmtime::bail!(
                "it exports none of wasi:cli/run (a command), wasi:http/incoming-handler \
                 (an HTTP handler) or their WASI 0.3 forms"
            )
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
            Entry::CommandP3(_) => World::CommandP3,
            Entry::ServiceP3(_) => World::ServiceP3,
        }
    }

    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }
}
