//! The HTTP endpoints of `run --listen`: `/metrics` (Prometheus text), `/healthz` (the
//! process answers) and `/readyz` (both databases answer and this instance is active).
//!
//! HTTP/1.1 only, GET only, no TLS: it is meant for a scraper and probes on a private
//! address. Every connection is cut when the server stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::{metrics, Role, ServiceError};
use crate::config::Side;
use crate::secret::redact;
use crate::sync::Sides;

/// A ping slower than this makes `/readyz` answer 503 (probes have short timeouts).
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that does not send its request headers in this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers read.
struct App {
    sides: Sides,
    role: Arc<Role>,
    metrics: PrometheusHandle,
}

/// A bound listener, not serving yet.
pub struct Server {
    listener: TcpListener,
    addr: String,
}

impl Server {
    /// Binds `addr` (`HOST:PORT`); fails at once, before anything else starts, if it cannot.
    pub async fn bind(addr: &str) -> Result<Server, ServiceError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ServiceError::Listen {
                addr: addr.to_string(),
                message: e.to_string(),
            })?;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| addr.to_string());
        Ok(Server { listener, addr })
    }

    /// Serves until `shutdown` turns true, then closes the listener and every connection.
    pub async fn serve(
        self,
        sides: Sides,
        role: Arc<Role>,
        metrics: PrometheusHandle,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let app = Arc::new(App {
            sides,
            role,
            metrics,
        });
        info!(
            "serving /metrics, /healthz and /readyz on http://{}",
            self.addr
        );
        let mut conns = JoinSet::new();
        while !*shutdown.borrow() {
            tokio::select! {
                r = shutdown.changed() => if r.is_err() { break },
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let app = app.clone();
                        conns.spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let app = app.clone();
                                async move { Ok::<_, Infallible>(route(&app, req).await) }
                            });
                            let served = hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .header_read_timeout(HEADER_TIMEOUT)
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                            if let Err(e) = served {
                                debug!("http connection: {e}");
                            }
                        });
                    }
                    // Out of file descriptors and the like: pause rather than spin.
                    Err(e) => {
                        debug!("http accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                // Reap finished connections so the set does not grow.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
        debug!("http server stopped");
    }
}

async fn route(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            // The pools' state costs nothing to read: keep it exact at every scrape.
            metrics::record_pools(&app.sides);
            let mut r = text(StatusCode::OK, app.metrics.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let (ok, why) = readiness(app).await;
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(code, format!("{why}\n"))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Ready = both databases answer a ping, and this instance is the active one.
async fn readiness(app: &App) -> (bool, String) {
    let (a, b) = tokio::join!(ping(&app.sides, Side::A), ping(&app.sides, Side::B));
    let mut problems: Vec<String> = [a, b].into_iter().flatten().collect();
    if !app.role.is_active() {
        problems.insert(0, app.role.why_not());
    }
    if problems.is_empty() {
        (true, "ready: active, both databases answer".into())
    } else {
        (false, problems.join("; "))
    }
}

async fn ping(sides: &Sides, side: Side) -> Option<String> {
    match tokio::time::timeout(PING_TIMEOUT, sides.get(side).ping()).await {
        Ok(Ok(())) => None,
        // Endpoint errors name host, port and database, never the password; redact anyway.
        Ok(Err(e)) => Some(redact(&e.to_string())),
        Err(_) => Some(format!(
            "side {side}: no answer to a ping within {} s",
            PING_TIMEOUT.as_secs()
        )),
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
