//! `latchkey locks list|release`: the operator's view of a store — every lock held now, and
//! a lock freed by force. It reaches the store with the operator's URL and credentials;
//! nothing of it is reachable from a guest.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use latchkey_host::config::StoreConfig;
use latchkey_host::key::GrantKind;
use latchkey_host::store::redacted;
use latchkey_host::{Holder, Listing, LockStore};

use crate::output::escaped;

use crate::args::{ListArgs, LocksCommand, OperatorStore, ReleaseArgs};

pub async fn command(command: LocksCommand) -> anyhow::Result<ExitCode> {
    match command {
        LocksCommand::List(args) => list(args).await,
        LocksCommand::Release(args) => release(args).await,
    }
}

/// `locks list`: a table (or JSON) of every lock held now; on stderr, what else the
/// listing came across.
async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    if let Some(app) = &args.app {
        check_app(app)?;
    }
    let store = open(&args.store)?;
    let listing = store.holders(args.app.as_deref()).await?;
    let text = if args.json {
        json(&listing.holders)
    } else {
        table(&listing.holders)
    };
    // A stdout nobody reads is no failure of the listing's.
    let _ = std::io::stdout().write_all(text.as_bytes());
    if listing.skipped > 0 {
        say!(
            "latchkey: skipped {} keys under latchkey: that are no lock of latchkey's",
            listing.skipped
        );
    }
    if let Some(note) = elsewhere(&listing) {
        say!("latchkey: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `locks release`: frees one lock whoever holds it.
async fn release(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    check_app(&args.app)?;
    if args.resource_id.is_empty() {
        bail!("the resource id is empty: name the lock to release");
    }
    let store = open(&args.store)?;
    let kind = match (args.permit, args.leadership) {
        (Some(slot), _) => GrantKind::Permit { slot },
        (None, true) => GrantKind::Leadership,
        (None, false) => GrantKind::Lock,
    };
    let held = store.evict(&args.app, &args.resource_id, kind).await?;
    let said = if held {
        "released: its holder will find it lost, and the next grant's fence is higher"
    } else {
        "was not held: nothing to release"
    };
    let _ = writeln!(
        std::io::stdout(),
        "{} {} of app {} {said}",
        kind_label(kind),
        quoted(&args.resource_id),
        quoted(&args.app)
    );
    if !held
        && let Ok(listing) = store.holders(Some(&args.app)).await
        && let Some(note) = elsewhere(&listing)
    {
        say!("latchkey: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// An app named by `--app`: checked as every app id is.
fn check_app(app: &str) -> anyhow::Result<()> {
    latchkey_host::limits::check_app_id(app).map_err(|reason| anyhow::anyhow!("--app: {reason}"))
}

/// What to say of locks held under other namespaces than the one listed, if any are.
fn elsewhere(listing: &Listing) -> Option<String> {
    if listing.elsewhere.is_empty() {
        return None;
    }
    let places: Vec<String> = listing
        .elsewhere
        .iter()
        .map(|(namespace, count)| match namespace {
            Some(namespace) => format!("{count} under --namespace {namespace}"),
            None => format!("{count} under no namespace"),
        })
        .collect();
    Some(format!(
        "locks are held under other namespaces than this one: {}",
        places.join(", ")
    ))
}

/// A guest's text for the operator's terminal: quoted, with control characters escaped.
fn quoted(text: &str) -> String {
    format!("\"{}\"", escaped(text))
}

/// The store the flags name, with the password they point at. Named by its URL, redacted,
/// in every message.
fn open(flags: &OperatorStore) -> anyhow::Result<LockStore> {
    // `NAME=URL`, as `run --store` takes it, is read as the URL.
    let url = match flags.store.split_once('=') {
        Some((name, url)) if !name.contains(':') && url.contains(':') => url,
        _ => flags.store.as_str(),
    };
    if url == "memory" {
        bail!(
            "a memory store lives inside one latchkey process, where no other process can see \
             it: name a Redis store"
        );
    }
    let mut config = StoreConfig::new(url);
    config.password_file = flags.password_file.clone();
    config.password_env = flags.password_env.clone();
    config.namespace = flags.namespace.clone();
    config.wait_replicas = flags.wait_replicas;
    config.timeout = Some(Duration::from_millis(flags.store_timeout_ms));
    Ok(config.open(&redacted(url))?)
}

/// Columns under a header, the kind of each lock beside it.
fn table(holders: &[Holder]) -> String {
    let header = ["APP", "ID", "KIND", "FENCE", "LEASE LEFT", "AGE", "VALUE"];
    let mut rows = vec![header.map(String::from)];
    rows.extend(holders.iter().map(|h| {
        // Guests chose the ids and values: escaped, so that none forges a row or drives
        // the terminal.
        [
            escaped(&h.app),
            escaped(&h.resource_id),
            kind_label(h.kind),
            h.fence.to_string(),
            brief(h.lease_left),
            h.age.map_or_else(|| "-".to_owned(), brief),
            h.value.as_deref().map_or_else(|| "-".to_owned(), escaped),
        ]
    }));
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// One JSON array: `app`, `id`, `kind` (`lock`, `permit`, `leadership`), `permit` (its
/// number, for a permit), `fence`, `lease_left_ms`, `age_ms` (null if the store cannot
/// say), `value` (a leader's).
fn json(holders: &[Holder]) -> String {
    let entries: Vec<serde_json::Value> = holders
        .iter()
        .map(|h| {
            serde_json::json!({
                "app": h.app,
                "id": h.resource_id,
                "kind": h.kind.name(),
                "permit": match h.kind {
                    GrantKind::Permit { slot } => Some(slot),
                    _ => None,
                },
                "fence": h.fence,
                "lease_left_ms": h.lease_left.as_millis() as u64,
                "age_ms": h.age.map(|age| age.as_millis() as u64),
                "value": h.value,
            })
        })
        .collect();
    let mut text = serde_json::Value::Array(entries).to_string();
    text.push('\n');
    text
}

/// A kind as `list` shows it and `release` takes it: `lock`, `permit:N`, `leadership`.
fn kind_label(kind: GrantKind) -> String {
    match kind {
        GrantKind::Permit { slot } => format!("permit:{slot}"),
        other => other.name().to_owned(),
    }
}

/// A duration as an operator reads it: `850ms`, `28.3s`, `12m05s`, `3h12m`.
fn brief(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", d.as_secs_f64()),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1_000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}
