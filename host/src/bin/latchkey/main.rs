//! `latchkey`: runs WebAssembly components that take distributed locks.
//!
//! A thin layer over the `latchkey_host` library:
//!
//! - `args`: the command line (clap);
//! - `guests`: the config file and flags merged into an app, its stores and limits;
//! - `run`: `latchkey run`, command components on a [`latchkey_host::Runner`];
//! - `serve`: `latchkey serve`, HTTP handlers on a [`latchkey_host::Runner`];
//! - `check`: `latchkey check`, a component compiled into the cache and its world named;
//! - `locks`: `latchkey locks list|release`, the operator's view of a store's locks;
//! - `output`: guest output, line by line, with a prefix per instance;
//! - `metrics`: `--metrics-addr`, the Prometheus endpoint;
//! - `signals`: SIGINT and SIGTERM, which stop the guests after releasing their locks.

#[macro_use]
mod output;
mod args;
mod check;
mod dapr;
mod guests;
mod locks;
mod metrics;
mod run;
mod serve;
mod signals;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind;

use args::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(|| output::HostStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            return ExitCode::from(2);
        }
        Err(err) => {
            say!("latchkey: {} (see latchkey --help)", first_paragraph(&err));
            output::drain();
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::command(args).await,
        Command::Serve(args) => serve::command(args).await,
        Command::Check(args) => check::command(args),
        Command::Dapr(args) => dapr::command(args).await,
        Command::Locks(command) => locks::command(command).await,
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            say!("latchkey: {err:#}");
            ExitCode::FAILURE
        }
    };
    output::drain();
    code
}

/// clap's own text spans several paragraphs; the first says what is wrong. It quotes the
/// value it refused, which may be a URL with a password in it: URLs are redacted.
fn first_paragraph(err: &clap::Error) -> String {
    let text = err.to_string();
    let first: Vec<String> = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(|line| {
            line.trim()
                .split(' ')
                .map(redact_word)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    first.join(" ").trim_start_matches("error: ").to_owned()
}

/// A word of a message with the secrets of any URL in it hidden, as the library hides them
/// (`latchkey_host::store::redacted`); what comes before the URL (`NAME=`, a quote) is kept.
fn redact_word(word: &str) -> String {
    let Some(scheme_end) = word.find("://") else {
        return word.to_owned();
    };
    let start = word[..scheme_end]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
        .map_or(0, |i| i + 1);
    let (before, url) = word.split_at(start);
    let quote = url.ends_with(['\'', '"']);
    let url = url.trim_end_matches(['\'', '"']);
    let shown = latchkey_host::store::redacted(url);
    format!(
        "{before}{shown}{}",
        if quote { &word[word.len() - 1..] } else { "" }
    )
}
