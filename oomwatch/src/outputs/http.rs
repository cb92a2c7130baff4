//! `GET /metrics` and `GET /healthz`. Rendering runs off the async workers so
//! a large scrape never delays event delivery.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use super::web_config::WebConfig;
use crate::outputs::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: address in use (another process holds it; choose another with --listen)")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// Binds before the daemon drops privileges (and before the runtime
/// exists), so a port conflict fails the start with one clear line.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, HttpError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| match source.kind() {
        std::io::ErrorKind::AddrInUse => HttpError::InUse { addr },
        _ => HttpError::Bind { addr, source },
    })?;
    listener.set_nonblocking(true).map_err(|source| HttpError::Bind { addr, source })?;
    Ok(listener)
}

pub async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>, web: Option<Arc<WebConfig>>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("http: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Too many open connections: drop this one rather than queue.
            continue;
        };
        let metrics = metrics.clone();
        let web = web.clone();
        tokio::spawn(async move {
            let tls = web.as_ref().and_then(|w| w.tls.clone());
            let service = {
                let web = web.clone();
                service_fn(move |req| handle(req, metrics.clone(), web.clone()))
            };
            let mut builder = http1::Builder::new();
            // Simple clients (nc, some scrapers) shut down their write side
            // after the request and still expect the response.
            builder.half_close(true).timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            match tls {
                Some(config) => {
                    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(Duration::from_secs(10), accept).await {
                        Ok(Ok(stream)) => {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Ok(Err(e)) => log::debug!("TLS handshake: {e}"),
                        Err(_) => log::debug!("TLS handshake timed out"),
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
            drop(permit);
        });
    }
}

fn wants_openmetrics(req: &Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"))
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    metrics: Arc<Metrics>,
    web: Option<Arc<WebConfig>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/healthz"
        && let Some(web) = &web
        && web.auth_required()
    {
        let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let web = web.clone();
        // bcrypt is slow on purpose: off the async workers.
        let ok = tokio::task::spawn_blocking(move || web.authorized(header.as_deref())).await.unwrap_or(false);
        if !ok {
            let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "unauthorized\n".into());
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"oomwatch\""));
            return Ok(r);
        }
    }
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let openmetrics = wants_openmetrics(&req);
            let body = tokio::task::spawn_blocking(move || metrics.render(openmetrics)).await.unwrap_or_default();
            let content_type = if openmetrics { OPENMETRICS_CONTENT_TYPE } else { TEXT_CONTENT_TYPE };
            reply(StatusCode::OK, content_type, body)
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/html",
            "<html><body><h1>oomwatch</h1><p><a href=\"/metrics\">/metrics</a> <a href=\"/healthz\">/healthz</a></p></body></html>\n".into(),
        ),
        (_, "/metrics" | "/healthz") => reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics or /healthz\n".into()),
    };
    Ok(response)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}
