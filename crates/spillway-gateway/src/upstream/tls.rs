//! Upstream TLS: the rustls client a cluster with `tls:` connects through — its CA bundle,
//! server name (SNI, and the name the certificate is verified against), optional client
//! certificate, and ALPN offering `h2` for `protocol: http2` or `http/1.1` for `http1`.
//!
//! Split in two so that a bad file never replaces a good config: the fallible part (reading
//! the files, building the rustls client with the `ring` provider, as the listeners use) runs
//! while the config is validated (`config::upstream_tls`), where an error can name its key and
//! line; [`UpstreamTls`] wraps the result in a `TlsConnector` when the snapshot's clusters are
//! built, which cannot fail, and checks ALPN at each handshake. [`UpstreamStream`] is what the
//! pool and the health checks speak HTTP over: plain TCP, or TLS on top of it.

use crate::config::upstream_tls::ALPN_H2;
use crate::config::{UpstreamProtocol, UpstreamTlsConfig};
use rustls_pki_types::ServerName;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Source of connector ids: 0 means plain TCP in pool keys, so ids start at 1.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One cluster's TLS connector and the server name it verifies.
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    protocol: UpstreamProtocol,
    /// Distinct per connector: the pool keeps connections made by different connectors (and
    /// plain ones, id 0) apart, so a connection is reused only with the settings it was
    /// verified under.
    id: u64,
    /// The config it was built from, to keep it (and its pooled connections) across a reload
    /// that changes nothing.
    config: UpstreamTlsConfig,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("protocol", &self.protocol)
            .field("id", &self.id)
            .finish()
    }
}

impl UpstreamTls {
    /// The connector of a cluster speaking `protocol` with `config`; reuses `previous` (the
    /// same cluster before a reload) when nothing changed, so its pooled connections stay.
    pub fn new(
        config: &UpstreamTlsConfig,
        protocol: UpstreamProtocol,
        previous: Option<&Arc<UpstreamTls>>,
    ) -> Arc<UpstreamTls> {
        if let Some(p) = previous.filter(|p| p.protocol == protocol && p.config.same_as(config)) {
            return p.clone();
        }
        Arc::new(UpstreamTls {
            connector: TlsConnector::from(config.client_config.clone()),
            server_name: config.server_name.clone(),
            protocol,
            id: NEXT_ID.fetch_add(1, Relaxed),
            config: config.clone(),
        })
    }

    /// The id that keeps this connector's pooled connections apart (never 0).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The configured server name (`tls.sni`, or its default).
    pub fn sni(&self) -> &str {
        &self.config.sni
    }

    /// The protocol ALPN offers.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// Runs the TLS handshake on `tcp`. For HTTP/2 the upstream must choose `h2` by ALPN:
    /// speaking HTTP/2 to a server that did not agree would fail later and less clearly.
    pub async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let stream = self.connector.connect(self.server_name.clone(), tcp).await?;
        let chosen = stream.get_ref().1.alpn_protocol();
        if self.protocol == UpstreamProtocol::Http2 && chosen != Some(ALPN_H2) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the upstream did not choose h2 by ALPN (protocol: http2 over TLS needs it)",
            ));
        }
        Ok(stream)
    }
}

/// A connection to an upstream endpoint: plain TCP, or TLS over TCP.
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (boxed: the rustls state is large, and a plain connection should not carry it).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
