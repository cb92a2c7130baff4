//! The small HTTP client every outgoing request uses: alert sinks
//! (Alertmanager, webhook) and the Pushgateway. Plain http:// (see
//! `config::check_url`), one timeout over the whole exchange, and errors
//! as one line naming the URL.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, body::Bytes, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

pub const USER_AGENT: &str = concat!("oomwatch/", env!("CARGO_PKG_VERSION"));

/// The most of a reply's body that is read: receivers answer with a
/// status and a short message; anything longer is not worth the memory.
pub const MAX_REPLY_BODY: usize = 64 * 1024;

/// What a server answered.
#[derive(Debug)]
pub struct Reply {
    pub status: hyper::StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        Self { inner: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// Sends one request; Ok for any 2xx answer. A non-2xx answer is an
    /// error carrying the status and the first 200 characters of the body.
    /// Sends one request; Ok for any 2xx answer. A non-2xx answer is an
    /// error carrying the status and the first 200 characters of the body.
    pub async fn send(&self, method: Method, url: &str, content_type: Option<&str>, body: Bytes, timeout: Duration) -> Result<(), HttpError> {
        let headers: Vec<(header::HeaderName, header::HeaderValue)> = content_type
            .map(|ct| header::HeaderValue::from_str(ct).map(|v| (header::CONTENT_TYPE, v)))
            .transpose()
            .map_err(|e| HttpError { url: crate::config::redact_url(url), reason: e.to_string() })?
            .into_iter()
            .collect();
        let reply = self.request(method, url, &headers, body, timeout).await?;
        if reply.status.is_success() {
            return Ok(());
        }
        Err(HttpError {
            url: crate::config::redact_url(url),
            reason: format!("HTTP {}: {}", reply.status, String::from_utf8_lossy(&reply.body).trim().chars().take(200).collect::<String>()),
        })
    }

    /// Sends one request and hands back whatever the server answered (its
    /// body read up to [`MAX_REPLY_BODY`]). Err only when there was no
    /// answer: connection refused or lost, or none within `timeout`.
    /// Credentials in the URL (`user:password@`) go in an Authorization
    /// header, as curl does; errors show the URL with the password hidden.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, header::HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, HttpError> {
        let shown = crate::config::redact_url(url);
        let err = |reason: String| HttpError { url: shown.clone(), reason };
        let (url, auth) = split_credentials(url);
        let mut req = Request::builder().method(method).uri(url.as_ref()).header(header::USER_AGENT, USER_AGENT);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let req = req.body(Full::new(body)).map_err(|e| err(e.to_string()))?;
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| err(crate::error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            // A reply too long (or cut off) still has its status: keep what came.
            let body = http_body_util::Limited::new(body, MAX_REPLY_BODY).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Ok(Reply { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| err(format!("no answer within {timeout:?}")))?
    }

    pub async fn post_json(&self, url: &str, body: String, timeout: Duration) -> Result<(), HttpError> {
        self.send(Method::POST, url, Some("application/json"), Bytes::from(body), timeout).await
    }
}

/// A request that failed: the URL (password hidden) and why, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct HttpError {
    pub url: String,
    pub reason: String,
}

/// The URL without its `user:password@`, and those credentials as a basic
/// auth header value (percent-escapes in them decoded).
fn split_credentials(url: &str) -> (std::borrow::Cow<'_, str>, Option<String>) {
    use base64::Engine as _;
    let Some((scheme, rest)) = url.split_once("://") else { return (url.into(), None) };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return (url.into(), None) };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = format!("{}:{}", percent_decode(user), percent_decode(password));
    let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials));
    (format!("{scheme}://{host}{tail}").into(), Some(header))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The host's name, as alerts and pushed metrics label it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// One-shot server: answers `reply` and hands back the request it read.
    fn serve_once(reply: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut buf = vec![0u8; 8192];
            let mut req = Vec::new();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
            s.write_all(reply.as_bytes()).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (port, handle)
    }

    #[tokio::test]
    async fn sends_method_type_and_body() {
        let (port, server) = serve_once("HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n");
        let c = HttpClient::new();
        c.send(Method::PUT, &format!("http://127.0.0.1:{port}/metrics/job/x"), Some("text/plain"), Bytes::from_static(b"a 1\n"), Duration::from_secs(5))
            .await
            .unwrap();
        let req = server.join().unwrap();
        assert!(req.starts_with("PUT /metrics/job/x HTTP/1.1"), "{req}");
        assert!(req.to_ascii_lowercase().contains("content-type: text/plain"), "{req}");
        assert!(req.ends_with("a 1\n"), "{req}");
    }

    #[tokio::test]
    async fn credentials_in_the_url_are_sent_as_basic_auth_and_never_shown() {
        let (port, req) = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        let url = format!("http://ops:p%40ss@127.0.0.1:{port}/hook");
        HttpClient::new().post_json(&url, "{}".into(), Duration::from_secs(2)).await.unwrap();
        let req = req.join().unwrap();
        // base64("ops:p@ss")
        assert!(req.contains("authorization: Basic b3BzOnBAc3M=") || req.contains("Authorization: Basic b3BzOnBAc3M="), "{req}");
        assert!(req.starts_with("POST /hook "), "the request line has no credentials: {req}");
        let refused = format!("http://ops:s3cret@127.0.0.1:{}/x", closed_port());
        let e = HttpClient::new().post_json(&refused, "{}".into(), Duration::from_secs(2)).await.unwrap_err().to_string();
        assert!(!e.contains("s3cret") && e.contains("ops:***@"), "{e}");
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn errors_are_one_line_with_status_and_cause() {
        let (port, server) = serve_once("HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\nbad metrics\n");
        let url = format!("http://127.0.0.1:{port}/");
        let e = HttpClient::new().post_json(&url, "{}".into(), Duration::from_secs(5)).await.unwrap_err().to_string();
        server.join().unwrap();
        assert_eq!(e, format!("{url}: HTTP 400 Bad Request: bad metrics"));

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/");
        let e = HttpClient::new().post_json(&url, "{}".into(), Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(e.starts_with(&url) && e.to_lowercase().contains("refused") && !e.contains('\n'), "{e}");
    }
}
