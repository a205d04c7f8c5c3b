//! Guest output with each line prefixed by its instance, for `--instances N` and `serve`.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The longest part of a line kept back waiting for its end.
const MAX_LINE: usize = 64 * 1024;

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Which of the host's streams a guest stream goes to.
#[derive(Clone)]
pub enum Target {
    Stdout,
    Stderr,
    /// A buffer, for tests.
    #[cfg(test)]
    Buffer(Arc<Mutex<Vec<u8>>>),
}

/// A guest's stdout or stderr that writes whole lines, each starting with `prefix`, so
/// that lines of concurrent instances never interleave mid-line. Clones share the
/// unfinished last line, which is written, ended, when the last clone is dropped.
#[derive(Clone)]
pub struct Prefixed(Arc<Lines>);

struct Lines {
    target: Target,
    prefix: String,
    /// The unfinished last line, shared by every stream the guest opens.
    pending: Mutex<Vec<u8>>,
}

impl Prefixed {
    pub fn new(target: Target, prefix: String) -> Self {
        Prefixed(Arc::new(Lines {
            target,
            prefix,
            pending: Mutex::default(),
        }))
    }
}

impl Lines {
    fn emit(&self, lines: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(lines.len() + 16);
        for line in lines.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(line);
        }
        match &self.target {
            Target::Stdout => std::io::stdout().lock().write_all(&out),
            Target::Stderr => std::io::stderr().lock().write_all(&out),
            #[cfg(test)]
            Target::Buffer(buffer) => {
                buffer.lock().unwrap().extend_from_slice(&out);
                Ok(())
            }
        }
    }

    /// Writes the complete lines in `pending + bytes` and keeps the rest — up to
    /// [`MAX_LINE`] bytes: a longer unfinished line is written out in pieces of that size,
    /// each ended as a line, so that guest output never grows the host.
    fn write_lines(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        let end = match pending.iter().rposition(|&b| b == b'\n') {
            Some(newline) => newline + 1,
            None => 0,
        };
        let overflow = pending.len() - end;
        let cut = end + overflow / MAX_LINE * MAX_LINE;
        if cut == 0 {
            return Ok(());
        }
        let rest = pending.split_off(cut);
        let out = std::mem::replace(&mut *pending, rest);
        let (lines, long) = out.split_at(end);
        let mut text = Vec::with_capacity(out.len() + long.len() / MAX_LINE);
        text.extend_from_slice(lines);
        for piece in long.chunks(MAX_LINE) {
            text.extend_from_slice(piece);
            text.push(b'\n');
        }
        self.emit(&text)
    }

    /// Writes what is left without a newline, ending it with one.
    fn finish(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.is_empty() {
            pending.push(b'\n');
            let _ = self.emit(&std::mem::take(&mut *pending));
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.finish();
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
        Poll::Ready(self.0.write_lines(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered(prefix: &str) -> (Prefixed, Arc<Mutex<Vec<u8>>>) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let out = Prefixed::new(Target::Buffer(buffer.clone()), prefix.into());
        (out, buffer)
    }

    /// Whole lines go out at once, each with its prefix; the last, unended one when the
    /// stream is dropped.
    #[test]
    fn lines_are_prefixed_and_the_last_is_ended() {
        let (out, buffer) = buffered("[1] ");
        out.0.write_lines(b"one\ntw").unwrap();
        out.0.write_lines(b"o\nthr").unwrap();
        assert_eq!(&*buffer.lock().unwrap(), b"[1] one\n[1] two\n");
        drop(out);
        assert_eq!(&*buffer.lock().unwrap(), b"[1] one\n[1] two\n[1] thr\n");
    }

    /// A guest that writes without newlines cannot grow the host: what it writes is kept
    /// up to a bounded length, then written out as a line of its own.
    #[test]
    fn a_line_without_end_is_bounded() {
        let (out, buffer) = buffered("> ");
        let chunk = [b'x'; 4096];
        for _ in 0..1024 {
            out.0.write_lines(&chunk).unwrap();
            let pending = out.0.pending.lock().unwrap().len();
            assert!(pending <= MAX_LINE, "{pending} bytes kept back");
        }
        drop(out);
        let written = buffer.lock().unwrap();
        let payload = written.iter().filter(|&&b| b == b'x').count();
        assert_eq!(payload, 1024 * 4096, "bytes were lost");
        assert!(written.starts_with(b"> xxx"));
    }
}
