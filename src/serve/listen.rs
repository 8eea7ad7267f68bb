//! Connections: the accept loop, HTTP/1.1 on each connection, and the graceful stop.
//!
//! axum's own `serve` loop has no deadline for a request's head and no bound on open
//! connections, so a client that opens a connection and sends half a request line holds it
//! (a file descriptor) for good, and a graceful stop waits for that client for good too.
//! Here each connection has [`ConnectionLimits::header_timeout`] to send a whole request
//! head (and an idle keep-alive connection as long to start its next one), at most
//! [`ConnectionLimits::max_connections`] are open at once (further clients wait in the
//! listen backlog), and a stop closes every connection that has no request in progress
//! while the others finish theirs.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Bounds on the clients' connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once; more clients wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Time a connection has to send a request's whole head (request line and headers),
    /// from its opening or from the end of its previous answer; then it is closed.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// 512 connections (well under the usual limit of 1024 open files); hyper's default of
    /// 30 s for a head.
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 512,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes. Then stops accepting, calls
/// `on_stop`, closes the connections that have no request in progress, lets the others
/// answer theirs (with `Connection: close`), and returns once every connection is closed.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    on_stop: impl FnOnce(),
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or memory: new clients wait in the backlog
                    // rather than the loop spinning on the same error.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            app.clone(),
            limits.header_timeout,
            stop_rx.clone(),
            slot,
        ));
        // Reap the finished connections' tasks so that the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    on_stop();
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it closes, or until the stop: then at once if no request
/// has reached the router on it yet (it may be sending a head, which is not accepted),
/// else once hyper has finished the request in progress, if any, and closed it.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let dispatched = Arc::new(AtomicBool::new(false));
    let seen = dispatched.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!("connection ended: {e}");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    if !dispatched.load(Ordering::Relaxed) {
        return;
    }
    // Keep-alive off: an idle connection closes now, a busy one after its answer.
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!("connection ended: {e}");
    }
}
