//! The client side of `GET /admin/stream`: one HTTP/1.1 connection to the admin listener
//! (hyper's client connection over a tokio socket) and the server-sent-events reader that cuts
//! its body into snapshots.
//!
//! Errors say what the operator has to do: which address could not be reached, whether a token
//! is needed or was refused, when the gateway went quiet. Each error's cause is its `source`
//! (printed after it by `spillway`'s `{:#}`), not repeated in its message.

use super::snapshot::Snapshot;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::time::Duration;

/// Why `spillway top` cannot show the gateway.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// `--admin` is not an address.
    #[error("`{0}` is not an admin address: give http://HOST:PORT or HOST:PORT")]
    BadAddress(String),
    /// `--admin` names a scheme other than plain HTTP.
    #[error("`{0}`: the admin listener speaks plain HTTP; give http://HOST:PORT")]
    UnsupportedScheme(String),
    /// Nothing accepted the connection.
    #[error("cannot reach the admin listener at {address}")]
    Unreachable {
        /// HOST:PORT.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The connection attempt did not finish in time.
    #[error("cannot reach the admin listener at {address}: no answer within {waited:?}")]
    ConnectTimeout {
        /// HOST:PORT.
        address: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The HTTP exchange failed.
    #[error("the admin listener at {address} broke the connection")]
    Http {
        /// HOST:PORT.
        address: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// 401 without a token.
    #[error(
        "the admin listener at {0} answered 401: /admin/stream needs the admin token; \
         pass --token TOKEN or set SPILLWAY_ADMIN_TOKEN"
    )]
    TokenNeeded(String),
    /// 401 with a token.
    #[error(
        "the admin listener at {0} answered 401: the admin token was refused; check --token \
         or SPILLWAY_ADMIN_TOKEN"
    )]
    TokenRefused(String),
    /// Another status than 200.
    #[error("the admin listener at {address} answered {status} to GET /admin/stream")]
    Status {
        /// HOST:PORT.
        address: String,
        /// The status.
        status: hyper::StatusCode,
    },
    /// The gateway closed the stream.
    #[error("the admin listener at {0} closed the stream (gateway stopped?)")]
    Ended(String),
    /// No snapshot for too long.
    #[error("no snapshot from the admin listener at {address} within {waited:?}")]
    Silent {
        /// HOST:PORT.
        address: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A snapshot that is not the JSON expected.
    #[error("the admin listener at {address} sent a snapshot that cannot be read")]
    Snapshot {
        /// HOST:PORT.
        address: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// Where the admin listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAddress {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl AdminAddress {
    /// Reads `http://HOST:PORT`, `HOST:PORT` or `[IPv6]:PORT` (a trailing `/` allowed).
    pub fn parse(text: &str) -> Result<AdminAddress, TopError> {
        let bad = || TopError::BadAddress(text.to_string());
        let rest = match text.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => return Err(TopError::UnsupportedScheme(text.to_string())),
            None => text,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || host.contains(['/', '[', ']', '@']) {
            return Err(bad());
        }
        let port = port.parse().map_err(|_| bad())?;
        Ok(AdminAddress { host: host.to_string(), port })
    }

    /// `host:port` as written in a `Host` header and in messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (`message` when absent).
    pub name: String,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Cuts a server-sent-events byte stream into events, whatever the chunking.
#[derive(Debug, Default)]
pub struct EventReader {
    pending: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
    ready: VecDeque<Event>,
}

impl EventReader {
    /// Adds bytes from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = String::from_utf8_lossy(line).into_owned();
            self.line(&line);
            start += end + 1;
        }
        self.pending.drain(..start);
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            let name = self.name.take().unwrap_or_else(|| "message".to_string());
            if let Some(data) = self.data.take() {
                self.ready.push_back(Event { name, data });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.ready.pop_front()
    }
}

/// An open `/admin/stream`.
pub struct SnapshotStream {
    address: String,
    body: Incoming,
    events: EventReader,
    patience: Duration,
}

impl SnapshotStream {
    /// Connects to `admin`, asks for the stream (with `token` as a bearer token) and checks the
    /// answer. `patience` bounds the connection and each later wait for a snapshot.
    pub async fn open(
        admin: &AdminAddress,
        token: Option<&str>,
        patience: Duration,
    ) -> Result<SnapshotStream, TopError> {
        let address = admin.authority();
        let connect = tokio::net::TcpStream::connect((admin.host.as_str(), admin.port));
        let socket = match tokio::time::timeout(patience, connect).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(source)) => return Err(TopError::Unreachable { address, source }),
            Err(_) => return Err(TopError::ConnectTimeout { address, waited: patience }),
        };
        let http = |source| TopError::Http { address: address.clone(), source };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(socket)).await.map_err(http)?;
        tokio::spawn(connection);
        let mut request = hyper::Request::get("/admin/stream")
            .header(hyper::header::HOST, &address)
            .header(hyper::header::ACCEPT, "text/event-stream");
        if let Some(token) = token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|_| TopError::BadAddress(address.clone()))?;
        let response = match tokio::time::timeout(patience, sender.send_request(request)).await {
            Ok(answer) => answer.map_err(http)?,
            Err(_) => return Err(TopError::Silent { address, waited: patience }),
        };
        match response.status() {
            hyper::StatusCode::OK => {}
            hyper::StatusCode::UNAUTHORIZED if token.is_none() => {
                return Err(TopError::TokenNeeded(address))
            }
            hyper::StatusCode::UNAUTHORIZED => return Err(TopError::TokenRefused(address)),
            status => return Err(TopError::Status { address, status }),
        }
        Ok(SnapshotStream {
            address,
            body: response.into_body(),
            events: EventReader::default(),
            patience,
        })
    }

    /// The admin address, as shown in messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Waits for the next `snapshot` event (other events are skipped).
    pub async fn next(&mut self) -> Result<Snapshot, TopError> {
        loop {
            while let Some(event) = self.events.next_event() {
                if event.name == "snapshot" {
                    return serde_json::from_str(&event.data).map_err(|source| {
                        TopError::Snapshot { address: self.address.clone(), source }
                    });
                }
            }
            let frame = match tokio::time::timeout(self.patience, self.body.frame()).await {
                Err(_) => {
                    let address = self.address.clone();
                    return Err(TopError::Silent { address, waited: self.patience });
                }
                Ok(None) => return Err(TopError::Ended(self.address.clone())),
                Ok(Some(frame)) => frame
                    .map_err(|source| TopError::Http { address: self.address.clone(), source })?,
            };
            if let Ok(data) = frame.into_data() {
                self.events.push(&data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn events_are_cut_at_blank_lines_whatever_the_chunks() {
        let text = "event: snapshot\ndata: {\"a\":1}\n\n: a comment\r\nevent: snapshot\r\ndata: x\r\ndata: y\r\n\r\ndata: plain\n\n";
        for chunk in [1, 3, 7, text.len()] {
            let mut reader = EventReader::default();
            let mut events = Vec::new();
            for part in text.as_bytes().chunks(chunk) {
                reader.push(part);
                events.extend(std::iter::from_fn(|| reader.next_event()));
            }
            let got: Vec<(&str, &str)> =
                events.iter().map(|e| (e.name.as_str(), e.data.as_str())).collect();
            assert_eq!(
                got,
                [("snapshot", "{\"a\":1}"), ("snapshot", "x\ny"), ("message", "plain")],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn an_event_is_not_given_out_before_its_blank_line() {
        let mut reader = EventReader::default();
        reader.push(b"event: snapshot\ndata: {}\n");
        assert_eq!(reader.next_event(), None);
        reader.push(b"\n");
        assert_eq!(reader.next_event().unwrap().data, "{}");
    }

    #[test]
    fn admin_addresses_are_read_with_or_without_a_scheme() {
        let want = AdminAddress { host: "127.0.0.1".into(), port: 9901 };
        assert_eq!(AdminAddress::parse("http://127.0.0.1:9901").unwrap(), want);
        assert_eq!(AdminAddress::parse("http://127.0.0.1:9901/").unwrap(), want);
        assert_eq!(AdminAddress::parse("127.0.0.1:9901").unwrap(), want);
        let v6 = AdminAddress::parse("http://[::1]:9901").unwrap();
        assert_eq!(v6, AdminAddress { host: "::1".into(), port: 9901 });
        assert_eq!(v6.authority(), "[::1]:9901");
        assert!(matches!(AdminAddress::parse("https://a:1"), Err(TopError::UnsupportedScheme(_))));
        for bad in ["127.0.0.1", "http://:9901", "a:port", "a:99999", "http://a:1/admin"] {
            assert!(matches!(AdminAddress::parse(bad), Err(TopError::BadAddress(_))), "{bad}");
        }
    }
}
