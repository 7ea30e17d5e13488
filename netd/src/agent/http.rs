// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The one HTTP/1.1 server behind the agent's sockets (the API, Docker's
//! network driver, and the metrics' TCP listener): a head timeout,
//! half-closes answered, a body limit, a graceful stop. What axum's `serve`
//! does, plus those.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::DefaultBodyLimit};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, UnixListener},
    time::Sleep,
};
use tracing::{debug, warn};

/// Request bodies above this are refused (413).
pub const MAX_BODY: usize = 1 << 20;

/// A client has this long to send a request's head once the server waits
/// for one; then its connection is closed. Without it, a client that
/// connects and says nothing (or trickles bytes) holds a connection, a
/// task and a file descriptor forever.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stop waits for requests in progress before it drops them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Which request heads [`HEAD_TIMEOUT`] bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadTimeout {
    /// Every request's, so idle keep-alive connections close after it too:
    /// the API's clients (netd's CLI, curl) open a connection per request.
    EveryRequest,
    /// The first request's only; afterwards an idle keep-alive connection
    /// is the client's to close. dockerd keeps its connections to a plugin
    /// open without limit and reuses them for POSTs: a connection the
    /// server closed while idle can fail a call Docker does not retry.
    FirstRequest,
}

/// A listening socket the server accepts connections from.
pub trait Accept: Send {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        Self::accept(self).await.map(|(stream, _)| stream)
    }
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Stream> {
        Self::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Serves `router` over HTTP/1.1 on `listener` until `stop` completes,
/// then lets requests in progress finish. A client that sends its whole
/// request and shuts down its writing half (`nc -N`, `socat`) gets its
/// answer.
pub async fn serve<L: Accept>(
    listener: L,
    router: Router,
    head_timeout: HeadTimeout,
    what: &'static str,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let router = router.layer(DefaultBodyLimit::max(MAX_BODY));
    let connections = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).half_close(true);
    if head_timeout == HeadTimeout::EveryRequest {
        http.header_read_timeout(HEAD_TIMEOUT);
    }
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(err) => {
                    // Out of file descriptors or memory: wait for some to
                    // come back rather than spin.
                    warn!(error = %err, socket = what, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let stream = match head_timeout {
            HeadTimeout::EveryRequest => FirstHead::off(stream),
            HeadTimeout::FirstRequest => FirstHead::within(stream, HEAD_TIMEOUT),
        };
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(error = %err, socket = what, "connection");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown())
        .await
        .is_err()
    {
        warn!(
            socket = what,
            "requests still in progress after {DRAIN_TIMEOUT:?}: dropped"
        );
    }
    Ok(())
}

/// A connection whose first request head must arrive whole (up to its
/// blank line) before a deadline; reads fail with `TimedOut` after it.
/// Later requests have no deadline.
struct FirstHead<S> {
    stream: S,
    /// `None` once the first head is in (or when off).
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last bytes read, to find "\r\n\r\n" across reads.
    tail: u32,
}

impl<S> FirstHead<S> {
    fn off(stream: S) -> Self {
        Self {
            stream,
            deadline: None,
            tail: 0,
        }
    }

    fn within(stream: S, limit: Duration) -> Self {
        Self {
            stream,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            tail: 0,
        }
    }

    /// Follows `bytes` through the head; whether its end went by.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            self.tail = (self.tail << 8) | u32::from(b);
            if self.tail == u32::from_be_bytes(*b"\r\n\r\n") {
                return true;
            }
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstHead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                let new = buf.filled()[filled..].to_vec();
                if this.scan(&new) {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            // Waiting for bytes: the deadline wakes this task too.
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no request head within {HEAD_TIMEOUT:?}"),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstHead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_at_its_blank_line_across_reads() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut head =
                FirstHead::off(tokio::net::UnixStream::from_std(a).expect("tokio stream"));
            assert!(!head.scan(b"GET / HTTP/1.1\r\nHost: x\r\n"));
            assert!(!head.scan(b"\r"));
            assert!(head.scan(b"\n"));
        });
    }
}
