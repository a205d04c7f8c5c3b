//! Guest output with each line prefixed by its instance number, for `--instances N`.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Which of the host's streams a guest stream goes to.
#[derive(Clone, Copy)]
pub enum Target {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr that writes whole lines, each starting with `prefix`, so
/// that lines of concurrent instances never interleave mid-line.
#[derive(Clone)]
pub struct Prefixed {
    target: Target,
    prefix: Arc<str>,
    /// The unfinished last line, shared by every stream the guest opens.
    pending: Arc<Mutex<Vec<u8>>>,
}

impl Prefixed {
    pub fn new(target: Target, prefix: String) -> Self {
        Prefixed {
            target,
            prefix: prefix.into(),
            pending: Arc::default(),
        }
    }

    fn emit(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(lines.len() + 16);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        match self.target {
            Target::Stdout => std::io::stdout().lock().write_all(&out),
            Target::Stderr => std::io::stderr().lock().write_all(&out),
        }
    }

    /// Writes the complete lines in `pending + bytes` and keeps the rest.
    fn write_lines(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        if let Some(end) = pending.iter().rposition(|&b| b == b'\n') {
            let rest = pending.split_off(end + 1);
            let lines = std::mem::replace(&mut *pending, rest);
            self.emit(&lines)?;
        }
        Ok(())
    }

    /// Writes what is left without a newline, ending it with one.
    pub fn finish(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            pending.push(b'\n');
            let _ = self.emit(&std::mem::take(&mut *pending));
        }
    }
}

impl IsTerminal for Prefixed {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Prefixed {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // A line or two to the terminal: short enough to write in place.
        Poll::Ready(self.write_lines(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
