//! Authentication (bearer tokens, constant-time), browser origin and DNS-rebinding checks.
//!
//! These run on the HTTP request (or the WebSocket upgrade) before any JSON-RPC parsing. The
//! scope of a credential is resolved again at every call against the current configuration,
//! so a token removed from the config stops working at its next call.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthMode, Config};
use crate::protocol::Scope;

/// What a client presented.
#[derive(Clone)]
pub enum Credential {
    /// Nothing (mode `none`).
    Anonymous,
    /// The SHA-256 of a bearer token; the token itself is never kept.
    Token([u8; 32]),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// Why a request was refused before any method ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// HTTP 401: missing or wrong token.
    Unauthorized(&'static str),
    /// HTTP 403: origin or host not allowed.
    Forbidden(String),
}

/// The token in `Authorization: Bearer <token>` or in the `token` query parameter.
pub fn presented_token(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
    {
        let mut parts = value.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim().to_string());
        }
    }
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(v))
}

/// The accepted tokens of one configuration snapshot, hashed once (not at every call).
pub struct TokenTable {
    mode: AuthMode,
    digests: Vec<([u8; 32], Option<Scope>)>,
}

impl TokenTable {
    /// The table of `config`'s tokens.
    pub fn new(config: &Config) -> Self {
        let auth = &config.gateway.auth;
        Self {
            mode: auth.mode,
            digests: auth
                .tokens
                .iter()
                .map(|t| {
                    (
                        Sha256::digest(t.token.as_bytes()).into(),
                        t.scopes.iter().copied().max(),
                    )
                })
                .collect(),
        }
    }

    /// Checks the credentials of a request.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Credential, Refusal> {
        match self.mode {
            AuthMode::None => Ok(Credential::Anonymous),
            AuthMode::Token => {
                let Some(token) = token else {
                    return Err(Refusal::Unauthorized(
                        "a token is required: send `Authorization: Bearer <token>` (or `?token=` on a browser WebSocket)",
                    ));
                };
                let cred = Credential::Token(Sha256::digest(token.as_bytes()).into());
                if self.scope(&cred).is_some() {
                    Ok(cred)
                } else {
                    Err(Refusal::Unauthorized("the token is not valid"))
                }
            }
        }
    }

    /// The scope a credential has now; `None` when it is no longer accepted.
    pub fn scope(&self, cred: &Credential) -> Option<Scope> {
        match (self.mode, cred) {
            (AuthMode::None, _) => Some(Scope::Admin),
            (AuthMode::Token, Credential::Anonymous) => None,
            (AuthMode::Token, Credential::Token(digest)) => {
                // Compare against every token, without an early exit, in constant time each.
                let mut found: Option<Scope> = None;
                for (candidate, scope) in &self.digests {
                    if bool::from(candidate.ct_eq(digest)) {
                        found = found.max(*scope);
                    }
                }
                found
            }
        }
    }
}

/// The name of the token a credential presented under `config` (the first of that value);
/// `None` in auth mode `none` or for a token no longer accepted.
pub fn token_name(config: &Config, cred: &Credential) -> Option<String> {
    let (AuthMode::Token, Credential::Token(digest)) = (config.gateway.auth.mode, cred) else {
        return None;
    };
    config
        .gateway
        .auth
        .tokens
        .iter()
        .find(|t| {
            let candidate: [u8; 32] = Sha256::digest(t.token.as_bytes()).into();
            bool::from(candidate.ct_eq(digest))
        })
        .map(|t| t.name.clone())
}

/// Checks the credentials of a request against `config`.
pub fn authenticate(config: &Config, token: Option<&str>) -> Result<Credential, Refusal> {
    TokenTable::new(config).authenticate(token)
}

/// The scope a credential has under `config` now; `None` when it is no longer accepted.
pub fn scope_of(config: &Config, cred: &Credential) -> Option<Scope> {
    TokenTable::new(config).scope(cred)
}

/// Whether `host` (a `Host` header, with optional port) names a loopback host.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks `Origin` (browsers) and, in mode `none`, `Host` (DNS rebinding).
pub fn check_browser(
    config: &Config,
    bound: IpAddr,
    port: u16,
    headers: &http::HeaderMap,
) -> Result<(), Refusal> {
    if config.gateway.auth.mode == AuthMode::None
        && let Some(host) = headers.get(http::header::HOST)
    {
        let host = host.to_str().unwrap_or("");
        if !is_loopback_host(host) {
            return Err(Refusal::Forbidden(format!(
                "Host {host:?} is not a loopback name; without token auth only loopback hosts are served"
            )));
        }
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(config, bound, port, origin) {
            return Err(Refusal::Forbidden(format!(
                "origin {origin:?} is not allowed; add it to gateway.allowed_origins"
            )));
        }
    }
    Ok(())
}

fn origin_allowed(config: &Config, bound: IpAddr, port: u16, origin: &str) -> bool {
    if config
        .gateway
        .allowed_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    // The gateway's own origins, over `http://` and `https://` (TLS).
    let (rest, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (rest, 443)
    } else {
        return false;
    };
    let (host, origin_port) = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, tail)) => (h.to_string(), tail.strip_prefix(':')),
            None => return false,
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let origin_port: u16 = match origin_port {
        Some(p) => match p.parse() {
            Ok(p) => p,
            Err(_) => return false,
        },
        None => default_port,
    };
    if origin_port != port {
        return false;
    }
    host.eq_ignore_ascii_case("localhost")
        || is_own_mdns_name(&host)
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip == bound || ip.is_loopback())
}

/// Whether `host` is this machine's mDNS name, `<host name>.local` (a final dot allowed).
fn is_own_mdns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let Some(cut) = host.len().checked_sub(".local".len()) else {
        return false;
    };
    match (host.get(..cut), host.get(cut..)) {
        (Some(name), Some(suffix)) => {
            suffix.eq_ignore_ascii_case(".local")
                && name.eq_ignore_ascii_case(crate::net::host_name())
        }
        _ => false,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn token_config() -> Config {
        let mut config = Config::default();
        config.gateway.auth.mode = AuthMode::Token;
        config.gateway.auth.tokens = vec![
            TokenConfig {
                name: "r".into(),
                token: "read-token-1".into(),
                scopes: vec![Scope::Read],
            },
            TokenConfig {
                name: "w".into(),
                token: "write-token-1".into(),
                scopes: vec![Scope::Read, Scope::Write],
            },
        ];
        config
    }

    #[test]
    fn tokens_resolve_to_their_highest_scope() {
        let config = token_config();
        let cred = authenticate(&config, Some("write-token-1")).expect("valid");
        assert_eq!(scope_of(&config, &cred), Some(Scope::Write));
        assert!(authenticate(&config, Some("nope-nope")).is_err());
        assert!(authenticate(&config, None).is_err());
        let mut revoked = config.clone();
        revoked.gateway.auth.tokens.pop();
        assert_eq!(scope_of(&revoked, &cred), None);
    }

    #[test]
    fn token_from_header_or_query() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            presented_token(&headers, Some("a=1&token=x%2By")),
            Some("x+y".into())
        );
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer abc".parse().expect("header"),
        );
        assert_eq!(presented_token(&headers, None), Some("abc".into()));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:18789",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:18789",
            "10.0.0.1",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn origins() {
        let mut config = Config::default();
        config.gateway.allowed_origins = vec!["https://app.example".into()];
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert!(origin_allowed(&config, ip, 18789, "http://127.0.0.1:18789"));
        assert!(origin_allowed(&config, ip, 18789, "http://localhost:18789"));
        assert!(origin_allowed(&config, ip, 18789, "http://[::1]:18789"));
        assert!(origin_allowed(&config, ip, 18789, "https://app.example"));
        assert!(!origin_allowed(&config, ip, 18789, "http://localhost:3000"));
        assert!(!origin_allowed(&config, ip, 18789, "https://evil.example"));
        assert!(!origin_allowed(&config, ip, 18789, "null"));
    }

    #[test]
    fn own_origins_over_https_and_the_mdns_name() {
        let config = Config::default();
        let ip = IpAddr::from([198, 18, 0, 1]);
        let host = crate::net::host_name();
        assert!(origin_allowed(
            &config,
            ip,
            18789,
            "https://198.18.0.1:18789"
        ));
        assert!(origin_allowed(
            &config,
            ip,
            18789,
            "https://localhost:18789"
        ));
        assert!(origin_allowed(&config, ip, 443, "https://198.18.0.1"));
        assert!(!origin_allowed(&config, ip, 443, "http://198.18.0.1"));
        assert!(origin_allowed(&config, ip, 80, "http://198.18.0.1"));
        for origin in [
            format!("http://{host}.local:18789"),
            format!("https://{host}.local:18789"),
            format!("https://{}.LOCAL.:18789", host.to_ascii_uppercase()),
        ] {
            assert!(origin_allowed(&config, ip, 18789, &origin), "{origin}");
        }
        assert!(!origin_allowed(
            &config,
            ip,
            18789,
            &format!("https://{host}.local:1")
        ));
        assert!(!origin_allowed(
            &config,
            ip,
            18789,
            &format!("https://x{host}.local:18789")
        ));
        assert!(!origin_allowed(
            &config,
            ip,
            18789,
            &format!("https://{host}.example:18789")
        ));
        assert!(!origin_allowed(
            &config,
            ip,
            18789,
            "https://198.18.0.2:18789"
        ));
        assert!(!origin_allowed(
            &config,
            ip,
            18789,
            "ftp://198.18.0.1:18789"
        ));
        assert!(!is_own_mdns_name("é.local"));
        assert!(!is_own_mdns_name("ééé"));
        assert!(!is_own_mdns_name(".local"));
    }
}
