//! The admin surface's checks, applied in the order of the admin-API
//! conventions (source allowlist, then `Authorization`), then read-only mode.
//! Every refusal is the API's envelope:
//!
//! | check | status | code | why this code |
//! |---|---|---|---|
//! | source allowlist | 403 | `FORBIDDEN` | katran has no code for it; the conventions' `forbidden`, in katran's case. Not `UNAUTHORIZED`: no credential would help. |
//! | token (`Bearer <token>` or the bare token) | 401 | `UNAUTHORIZED` | katran's own code, with `WWW-Authenticate: Bearer` (RFC 6750) |
//! | read-only | 403 | `READ_ONLY` | the conventions' `read_only`: the request is understood and valid, this agent refuses changes |

use crate::error::Code;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use subtle::{Choice, ConstantTimeEq};

use crate::api::error::ApiError;

/// Paths open without a token: liveness and readiness probes (kubelet, load
/// balancers) cannot be given secrets easily, and they reveal only whether
/// the agent is up and its balancer ready. The allowlist still applies.
pub const OPEN_PATHS: &[&str] = &["/health", "/health/ready"];

/// The one POST allowed in read-only mode: it changes no configuration, it
/// runs a packet through the program (whose counters count it, and whose
/// connection table remembers the flow's real, exactly as the live packet
/// would), which is what a read-only operator debugging a flow needs.
pub const READ_ONLY_ALLOWED_POST: &str = "/api/v1/utils/simulate-packet";

/// Source networks allowed to use the API.
#[derive(Debug, Clone)]
pub struct Allowlist(Arc<[IpNet]>);

impl Allowlist {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().collect())
    }

    /// IPv4-mapped IPv6 peers (a dual-stack listener's view of IPv4 clients)
    /// are matched as the IPv4 addresses they are.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Refuses requests whose TCP peer (never a forwarded-for header) is outside the allowlist.
pub async fn allowlist(State(list): State<Allowlist>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    match peer {
        Some(ip) if list.allows(ip) => next.run(req).await,
        // Fail closed: a request without a known peer did not come through our listener.
        None => forbidden("the request's source address is unknown").into_response(),
        Some(ip) => {
            forbidden(format!("source address {ip} is not allowed to use the API (see --allow-cidr)")).into_response()
        }
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(Code::Forbidden, message)
}

/// The bearer token. Its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct Token {
    /// The token, the bare form of the header's value.
    bare: Arc<[u8]>,
    /// `Bearer <token>`, the RFC 6750 form (with the scheme's canonical spelling).
    bearer: Arc<[u8]>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token is one line of visible ASCII: it travels in a header.
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("the token is empty".to_owned());
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be visible ASCII without spaces".to_owned());
        }
        let bearer: Vec<u8> = b"Bearer ".iter().chain(secret.as_bytes()).copied().collect();
        Ok(Self { bare: secret.as_bytes().into(), bearer: bearer.into() })
    }

    /// Reads a token file; surrounding whitespace (the final newline) is not part of the token.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::new(text.trim())
    }

    /// The admin conventions' check: the whole `Authorization` value equals
    /// `Bearer <token>` or the bare `<token>`. The scheme is matched
    /// case-insensitively and may be followed by several spaces (RFC 7235's
    /// `1*SP`); that canonicalization looks only at the scheme, never the
    /// secret. Both comparisons always run, over the whole presented value,
    /// in constant time (no early exit at the first differing byte, nor on a
    /// length mismatch): the time depends only on the presented length.
    fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header.map(HeaderValue::as_bytes) else { return false };
        let canonical = match value.split_at_checked(6) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"Bearer") && rest.starts_with(b" ") => {
                let mut canonical = b"Bearer ".to_vec();
                canonical.extend_from_slice(rest.trim_ascii_start());
                Some(canonical)
            }
            _ => None,
        };
        let as_bearer = ct_eq_padded(canonical.as_deref().unwrap_or(value), &self.bearer);
        let as_bare = ct_eq_padded(value, &self.bare);
        bool::from(as_bearer | as_bare)
    }
}

/// `a == b` in constant time over `max(len)` bytes: unlike `subtle`'s slice
/// comparison, a length mismatch is not answered early.
fn ct_eq_padded(a: &[u8], b: &[u8]) -> Choice {
    let n = a.len().max(b.len());
    let bytes = (0..n)
        .fold(Choice::from(1), |acc, i| acc & a.get(i).copied().unwrap_or(0).ct_eq(&b.get(i).copied().unwrap_or(0)));
    bytes & (a.len() as u64).ct_eq(&(b.len() as u64))
}

/// Requires the bearer token on every path but [`OPEN_PATHS`].
pub async fn bearer(State(token): State<Token>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let header = req.headers().get(AUTHORIZATION);
    if token.accepts(header) {
        return next.run(req).await;
    }
    let (message, challenge) = match header {
        None => ("missing token: send Authorization: Bearer <token>", "Bearer realm=\"weir-agent\""),
        Some(_) => ("invalid token", "Bearer realm=\"weir-agent\", error=\"invalid_token\""),
    };
    let mut response = ApiError::unauthorized(message).into_response();
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

/// True for requests that may change the balancer: every method but GET,
/// HEAD and OPTIONS, except [`READ_ONLY_ALLOWED_POST`].
pub fn is_mutation(method: &Method, path: &str) -> bool {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let allowed = method == Method::POST && path == READ_ONLY_ALLOWED_POST;
    !(safe || allowed)
}

/// Refuses mutations (read-only mode).
pub async fn read_only(req: Request, next: Next) -> Response {
    if !is_mutation(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let message = format!("weir-agent runs read-only (--read-only): {} {} is refused", req.method(), req.uri().path());
    ApiError::new(Code::ReadOnly, message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_mapped_ipv4() {
        let list = Allowlist::new(["127.0.0.0/8".parse().unwrap()]);
        assert!(list.allows("127.0.0.1".parse().unwrap()));
        assert!(list.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!list.allows("10.0.0.1".parse().unwrap()));
        assert!(!list.allows("::1".parse().unwrap()));
    }

    #[test]
    fn bearer_tokens() {
        let token = Token::new("s3cret").unwrap();
        let accepts = |v: &str| token.accepts(Some(&HeaderValue::from_str(v).unwrap()));
        assert!(accepts("Bearer s3cret"));
        assert!(accepts("bearer  s3cret"));
        assert!(accepts("s3cret"), "the bare token (admin conventions)");
        assert!(!accepts("Bearer s3cre"));
        assert!(!accepts("Bearer s3cretx"));
        assert!(!accepts("Basic s3cret"));
        assert!(!accepts("Bearers3cret"));
        assert!(!accepts("s3cre"));
        assert!(!accepts("s3cret "));
        assert!(!accepts("Bearer "));
        assert!(!token.accepts(None));
        assert!(Token::new("").is_err());
        assert!(Token::new("a b").is_err());
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn mutations() {
        assert!(!is_mutation(&Method::GET, "/api/v1/vips"));
        assert!(!is_mutation(&Method::OPTIONS, "/api/v1/vips"));
        assert!(is_mutation(&Method::POST, "/api/v1/vips"));
        assert!(is_mutation(&Method::DELETE, "/api/v1/lru"));
        assert!(is_mutation(&Method::PUT, "/api/v1/utils/mac"));
        assert!(!is_mutation(&Method::POST, "/api/v1/utils/simulate-packet"));
    }
}
