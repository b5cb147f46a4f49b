//! The HTTP endpoints of `run --listen`: `/metrics` (Prometheus text), `/healthz` (the
//! process answers), `/readyz` (both databases answer and this instance is active) and the
//! status page `/` with its form posts (`/login`, `/suspended/resubmit`,
//! `/suspended/discard`; see [`super::page`]).
//!
//! HTTP/1.1 only, no TLS: it is meant for a scraper, probes and operators on a private
//! address. Every connection is cut when the server stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderName, HeaderValue, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::page::{self, Answer, Page};
use super::{metrics, Role, ServiceError};
use crate::config::Side;
use crate::secret::redact;
use crate::sync::Sides;

/// A ping slower than this makes `/readyz` answer 503 (probes have short timeouts).
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that does not send its request headers in this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest form body read (a token, an id and the CSRF value).
const MAX_FORM: usize = 16 * 1024;

/// What the handlers read.
struct App {
    sides: Sides,
    role: Arc<Role>,
    metrics: PrometheusHandle,
    page: Arc<Page>,
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
        page: Arc<Page>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let app = Arc::new(App {
            sides,
            role,
            metrics,
            page,
        });
        info!(
            "serving the status page /, /metrics, /healthz and /readyz on http://{}",
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
    if req.method() == Method::POST {
        return post(app, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST\n".into());
    }
    match req.uri().path() {
        "/" => {
            let answer = {
                let seen = seen(&req);
                app.page.show(&app.sides, &app.role, &seen).await
            };
            answer_to_response(answer)
        }
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
            "not found: try /, /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// The status page's form posts.
async fn post(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if !matches!(
        path.as_str(),
        "/login" | "/suspended/resubmit" | "/suspended/discard"
    ) {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_FORM).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "form too large\n".into()),
    };
    let req = Request::from_parts(parts, ());
    let seen = seen(&req);
    let answer = match path.as_str() {
        "/login" => app.page.login(&seen, &body),
        "/suspended/discard" => app.page.act(&app.sides, &seen, &body, true).await,
        _ => app.page.act(&app.sides, &seen, &body, false).await,
    };
    answer_to_response(answer)
}

/// The headers and query the page looks at.
fn seen<B>(req: &Request<B>) -> page::Request<'_> {
    let h = |name: &HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    page::Request {
        cookie: h(&COOKIE),
        host: h(&HOST),
        origin: h(&ORIGIN),
        fetch_site: req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok()),
        query: req.uri().query(),
    }
}

fn answer_to_response(answer: Answer) -> Response<Full<Bytes>> {
    let mut r = match answer {
        Answer::Html(code, body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Answer::Redirect {
            location,
            set_cookie,
        } => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(LOCATION, v);
            }
            if let Some(v) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            r
        }
    };
    // No script, no framing, nothing loaded from elsewhere, forms only to this page.
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Not no-referrer: with it, browsers send `Origin: null` on the page's own form posts.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    r
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
