//! The metrics listener: `GET /metrics` (Prometheus text format 0.0.4), `GET /healthz` and
//! `GET /readyz`, served by HTTP/1.1 (`hyper`) on a thread and runtime of its own, so a scrape
//! never runs on, or waits for, a shard's executor or the gateway's workers.
//!
//! Limits: [`CONNECTIONS_MAX`] connections at once (more are closed at once), request heads
//! read within [`HEAD_TIMEOUT`] and at most [`HEAD_BYTES_MAX`] long, a connection kept at
//! most [`CONNECTION_LIFETIME`].

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::sync::{oneshot, Semaphore};

use crate::expose::{registry, scrape, Exposition};

/// Connections served at once: Prometheus keeps one per scrape target, an operator's `curl`
/// and a load balancer's probe a few more.
pub const CONNECTIONS_MAX: usize = 16;
/// A request head must arrive within this long (slow clients cannot hold a connection).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read (a probe's GET is a few hundred bytes).
pub const HEAD_BYTES_MAX: usize = 16 << 10;
/// A kept-alive connection is closed after this long, so none is held forever.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);

/// The content type of a scrape.
const SCRAPE_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Error)]
pub enum EndpointError {
    #[error("invalid metrics listen address {address}: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot listen for metrics on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// A running metrics listener; stops when [`MetricsListener::stop`] is called or it is
/// dropped.
#[derive(Debug)]
pub struct MetricsListener {
    /// The address it listens on (port 0 resolved).
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsListener {
    /// Stops listening and waits for the thread to end (open connections are dropped).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Binds `listen` (`HOST:PORT`; port 0 picks one) and serves `exposition` from a new thread.
pub fn serve(
    listen: &str,
    exposition: Arc<dyn Exposition>,
) -> Result<MetricsListener, EndpointError> {
    crate::process::mark_start();
    let bad = |reason: String| EndpointError::Address {
        address: listen.to_owned(),
        reason,
    };
    let address = listen
        .to_socket_addrs()
        .map_err(|error| bad(error.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))?;
    let listener =
        StdListener::bind(address).map_err(|source| EndpointError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| EndpointError::Bind { address, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| EndpointError::Bind { address, source })?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || run(listener, exposition, stopped))
        .map_err(EndpointError::Thread)?;
    Ok(MetricsListener {
        address: bound,
        stop: Some(stop),
        thread: Some(thread),
    })
}

fn run(listener: StdListener, exposition: Arc<dyn Exposition>, stopped: oneshot::Receiver<()>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the metrics runtime: {error}; metrics are not served");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!("cannot serve metrics: {error}");
                return;
            }
        };
        let registry = Arc::new(registry(exposition.clone()));
        let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        tokio::pin!(stopped);
        loop {
            let accepted = tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!("metrics accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // At the limit the new connection is closed at once: probes retry.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let registry = registry.clone();
            let exposition = exposition.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let answer = answer(&request, &registry, exposition.as_ref());
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .max_buf_size(HEAD_BYTES_MAX);
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(slot);
            });
        }
    });
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn answer(
    request: &Request<Incoming>,
    registry: &prometheus_client::registry::Registry,
    exposition: &dyn Exposition,
) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".into(),
            PLAIN,
        );
    }
    match request.uri().path() {
        "/metrics" => match scrape(registry) {
            Ok(body) => text(StatusCode::OK, body, SCRAPE_CONTENT_TYPE),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the metrics could not be encoded\n".into(),
                PLAIN,
            ),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/readyz" => {
            let readiness = exposition.readiness();
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let head = if readiness.ready {
                "ready"
            } else {
                "not ready"
            };
            let body = if readiness.detail.is_empty() {
                format!("{head}\n")
            } else {
                format!("{head}\n{}\n", readiness.detail.trim_end())
            };
            text(status, body, PLAIN)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz and /readyz are served here\n".into(),
            PLAIN,
        ),
    }
}
