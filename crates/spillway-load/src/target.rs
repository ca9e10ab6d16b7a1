//! The URL under test: parsed, resolved, and refused when it is not on this machine unless the
//! user explicitly allows remote targets.
//!
//! Load tests are bounded by design. Pointing one at somebody else's server by mistake is the
//! worst thing a load tool can do, so loopback is the default and anything else is opt-in.

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use std::net::{SocketAddr, ToSocketAddrs};

/// A target that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a URL we understand.
    #[error("invalid target URL `{0}`: expected http://HOST[:PORT]/PATH")]
    BadUrl(String),
    /// `https://` or another scheme.
    #[error("unsupported scheme in `{0}`: only http:// (HTTP/1.1 or h2c) is supported")]
    UnsupportedScheme(String),
    /// The host name does not resolve.
    #[error("cannot resolve `{host}`: {source}")]
    Resolve {
        /// Host as given.
        host: String,
        /// Resolver error.
        source: std::io::Error,
    },
    /// The host resolves to an address outside loopback and `--allow-remote` was not given.
    #[error(
        "refusing to load `{host}` ({addr}): it is not a loopback address; pass --allow-remote \
         if you really mean to load another machine"
    )]
    NotLoopback {
        /// Host as given.
        host: String,
        /// The first non-loopback address it resolved to.
        addr: SocketAddr,
    },
}

/// A resolved, checked HTTP target.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` as written (sent as the `Host` header / `:authority`).
    pub authority: Authority,
    /// Path and query of the URL (`/` when empty).
    pub path_and_query: PathAndQuery,
    /// The address connections go to.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `url`, resolves its host and checks it is loopback unless `allow_remote`.
    pub fn resolve(url: &str, allow_remote: bool) -> Result<Target, TargetError> {
        let uri: Uri = url.parse().map_err(|_| TargetError::BadUrl(url.to_string()))?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(_) => return Err(TargetError::UnsupportedScheme(url.to_string())),
            None => return Err(TargetError::BadUrl(url.to_string())),
        }
        let authority =
            uri.authority().cloned().ok_or_else(|| TargetError::BadUrl(url.to_string()))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|source| TargetError::Resolve { host: host.clone(), source })?
            .collect();
        let addr = check_loopback(&host, &addrs, allow_remote)?;
        let path_and_query =
            uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Target { authority, path_and_query, addr })
    }

    /// The absolute URI of `path_and_query` on this target (for HTTP/2 requests).
    pub fn absolute(&self, path_and_query: &PathAndQuery) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query.clone())
            .build()
    }
}

/// Picks the address to connect to: the first one, provided every resolved address is loopback
/// or `allow_remote` is set.
pub fn check_loopback(
    host: &str,
    addrs: &[SocketAddr],
    allow_remote: bool,
) -> Result<SocketAddr, TargetError> {
    let first = addrs.first().copied().ok_or_else(|| TargetError::Resolve {
        host: host.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
    })?;
    if !allow_remote {
        if let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(TargetError::NotLoopback { host: host.to_string(), addr: *remote });
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        let t = Target::resolve("http://127.0.0.1:8080/hello?x=1", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path_and_query.as_str(), "/hello?x=1");
        assert!(Target::resolve("http://[::1]:9/", false).is_ok());
        assert!(Target::resolve("http://localhost:9", false).is_ok());
    }

    #[test]
    fn non_loopback_targets_are_refused_without_allow_remote() {
        let err = Target::resolve("http://192.0.2.10:80/", false).unwrap_err();
        assert!(matches!(err, TargetError::NotLoopback { .. }), "{err}");
        assert!(err.to_string().contains("--allow-remote"));
        // Pure check on addresses: one remote address among loopback ones is enough to refuse.
        let mixed: Vec<SocketAddr> =
            vec!["127.0.0.1:80".parse().unwrap(), "10.0.0.1:80".parse().unwrap()];
        assert!(check_loopback("mixed", &mixed, false).is_err());
    }

    #[test]
    fn allow_remote_lets_other_addresses_through() {
        // Resolution only: no traffic is sent by this test.
        let t = Target::resolve("http://192.0.2.10:80/", true).unwrap();
        assert_eq!(t.addr.port(), 80);
    }

    #[test]
    fn https_and_garbage_are_refused() {
        assert!(matches!(
            Target::resolve("https://127.0.0.1/", false),
            Err(TargetError::UnsupportedScheme(_))
        ));
        assert!(matches!(Target::resolve("not a url", false), Err(TargetError::BadUrl(_))));
        assert!(matches!(Target::resolve("127.0.0.1:80", false), Err(TargetError::BadUrl(_))));
    }
}
