//! The runtime: what runs guests whole, as the `latchkey` CLI does — the sandbox every
//! instance runs in ([`sandbox`]), the [`Runner`] that loads and prepares components of
//! every world on one linker, commands run to their end ([`Runner::run`]), and HTTP
//! handlers served ([`serve`]).

pub mod sandbox;
pub mod serve;

mod run;
pub(crate) mod runner;

pub use run::Exit;
pub use runner::{Program, Runner, World};
