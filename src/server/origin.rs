//! DNS-rebinding protection for every HTTP route that acts (`/mcp`, `/sse`,
//! `/messages`, `/admin`): a `Host` must be one of ours, and a browser's
//! `Origin` one the operator allowed or the server's own. Checked before the
//! token, so a foreign page gets 403 whatever it sends. rmcp checks `/mcp`
//! again with the same rule.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::http::json_error;

/// DNS-rebinding protection, as rmcp does it for `/mcp`: a `Host` must be one
/// of ours, and a browser's `Origin` one the operator allowed. Returns the
/// refusal, if any.
pub fn refuse_host_or_origin(
    allowed_hosts: &[String],
    allowed_origins: &[String],
    headers: &HeaderMap,
) -> Option<Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| axum::http::uri::Authority::try_from(h).ok());
    let host_ok = host.is_some_and(|host| {
        allowed_hosts.iter().any(|allowed| {
            match axum::http::uri::Authority::try_from(allowed.as_str()) {
                Ok(a) => {
                    same_host(a.host(), host.host())
                        && a.port_u16().is_none_or(|p| Some(p) == host.port_u16())
                }
                Err(_) => same_host(allowed, host.host()),
            }
        })
    });
    if !host_ok {
        tracing::warn!(host = ?headers.get(header::HOST), "request with a foreign Host refused");
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "this Host is not served here (DNS rebinding protection); the operator can allow \
             it with --allowed-host",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !allowed_origins
            .iter()
            .any(|allowed| origin_matches(allowed, &origin))
        {
            tracing::warn!(origin = %origin, "request from a foreign Origin refused");
            return Some(json_error(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                &format!("requests from the origin `{origin}` are refused (--allowed-origin)"),
            ));
        }
    }
    None
}

/// The origins accepted: the operator's, plus the server's own
/// (`http://localhost:PORT`, `http://127.0.0.1:PORT`, `http://[::1]:PORT` and
/// the bound address). A browser sends an own origin only for a page this very
/// server served, so it is no rebinding attack (a rebound page carries its
/// attacker's name); the MCP conformance suite expects it accepted. Another
/// port on loopback is another program, and stays refused.
pub fn with_own_origins(bound: SocketAddr, allowed: &[String]) -> Vec<String> {
    let port = bound.port();
    let mut origins = allowed.to_vec();
    origins.extend(
        ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|host| format!("http://{host}:{port}")),
    );
    if !bound.ip().is_unspecified() {
        origins.push(format!("http://{bound}"));
    }
    origins.dedup();
    origins
}

fn same_host(a: &str, b: &str) -> bool {
    let strip = |h: &str| h.trim_matches(['[', ']']).to_ascii_lowercase();
    strip(a) == strip(b)
}

/// `scheme://host[:port]`, where an allowed entry without a port or with
/// `:*` accepts any port (rmcp's rule for `/mcp`).
fn origin_matches(allowed: &str, origin: &str) -> bool {
    let parse = |s: &str| {
        let uri = axum::http::Uri::try_from(s.trim()).ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        Some((scheme, authority.host().to_string(), authority.port_u16()))
    };
    let (allowed, any_port) = match allowed.strip_suffix(":*") {
        Some(base) => (base, true),
        None => (allowed, false),
    };
    match (parse(allowed), parse(origin)) {
        (Some((a_scheme, a_host, a_port)), Some((o_scheme, o_host, o_port))) => {
            a_scheme == o_scheme
                && same_host(&a_host, &o_host)
                && (any_port || a_port.is_none() || a_port == o_port)
        }
        _ => allowed.trim().eq_ignore_ascii_case(origin.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::{origin_matches, with_own_origins};

    #[test]
    fn own_origins_are_the_bound_port_on_loopback_names() {
        let own = with_own_origins("127.0.0.1:8787".parse().unwrap(), &[]);
        let ok = |origin: &str| own.iter().any(|a| origin_matches(a, origin));
        assert!(ok("http://127.0.0.1:8787"));
        assert!(ok("http://localhost:8787"));
        assert!(ok("http://[::1]:8787"));
        assert!(!ok("http://localhost:8788"));
        assert!(!ok("https://localhost:8787"));
        assert!(!ok("http://evil.example:8787"));
    }

    #[test]
    fn origins_match_by_scheme_host_and_port() {
        assert!(origin_matches(
            "http://localhost:3000",
            "http://localhost:3000"
        ));
        assert!(origin_matches(
            "http://localhost:*",
            "http://localhost:5173"
        ));
        assert!(origin_matches("http://localhost", "http://localhost:5173"));
        assert!(!origin_matches(
            "http://localhost:3000",
            "http://localhost:3001"
        ));
        assert!(!origin_matches(
            "http://localhost:3000",
            "https://localhost:3000"
        ));
        assert!(!origin_matches(
            "http://localhost:3000",
            "http://evil.example"
        ));
        assert!(!origin_matches("http://localhost:3000", "null"));
    }
}
