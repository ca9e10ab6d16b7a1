//! A scripted HTTP/2 client for tests: builds frames with the crate's own codec and reads
//! back what the server connection wrote.
#![allow(dead_code)]

use spillway_h2::frame::{Frame, MAX_MAX_FRAME_SIZE};
use spillway_h2::hpack::{Decoder, Encoder, Indexing};
use spillway_h2::{Connection, ErrorCode, Event, ServerSettings, PREFACE};
use std::time::Instant;

/// A frame the server sent, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Settings { ack: bool, params: Vec<(u16, u32)> },
    Headers { stream: u32, end_stream: bool, fields: Vec<(String, String)> },
    Data { stream: u32, end_stream: bool, data: Vec<u8> },
    Rst { stream: u32, code: ErrorCode },
    Ping { ack: bool, payload: [u8; 8] },
    GoAway { last_stream: u32, code: ErrorCode },
    Window { stream: u32, increment: u32 },
}

pub struct Client {
    pub conn: Connection,
    pub enc: Encoder,
    pub dec: Decoder,
    pub now: Instant,
    pending: Vec<u8>,
}

pub fn get(path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), "GET".into()),
        (":scheme".into(), "https".into()),
        (":path".into(), path.into()),
        (":authority".into(), "example.test".into()),
    ]
}

pub fn post(path: &str) -> Vec<(String, String)> {
    let mut f = get(path);
    f[0].1 = "POST".into();
    f
}

impl Client {
    /// A connection past the preface and SETTINGS exchange, output drained.
    pub fn connected(settings: ServerSettings) -> Client {
        let mut c = Client::raw(settings);
        let mut bytes = PREFACE.to_vec();
        Frame::Settings { ack: false, params: &[] }.encode(&mut bytes);
        c.feed(&bytes).expect("handshake");
        let out = c.take_output();
        assert!(matches!(out.first(), Some(Out::Settings { ack: false, .. })), "{out:?}");
        assert!(out.contains(&Out::Settings { ack: true, params: vec![] }), "{out:?}");
        c
    }

    pub fn raw(settings: ServerSettings) -> Client {
        Client {
            conn: Connection::new(settings),
            enc: Encoder::new(4096),
            dec: Decoder::new(4096, usize::MAX),
            now: Instant::now(),
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; asserts the connection consumed everything complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), spillway_h2::H2Error> {
        self.pending.extend_from_slice(bytes);
        let n = self.conn.recv(&self.pending, self.now)?;
        self.pending.drain(..n);
        Ok(())
    }

    pub fn frame(&mut self, f: Frame<'_>) -> Result<(), spillway_h2::H2Error> {
        let mut b = Vec::new();
        f.encode(&mut b);
        self.feed(&b)
    }

    pub fn block(&mut self, fields: &[(String, String)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (n, v) in fields {
            self.enc.encode_field_as(n.as_bytes(), v.as_bytes(), Indexing::Incremental, &mut block);
        }
        block
    }

    pub fn headers(
        &mut self,
        stream: u32,
        fields: &[(String, String)],
        end_stream: bool,
    ) -> Result<(), spillway_h2::H2Error> {
        let block = self.block(fields);
        self.frame(Frame::Headers {
            stream,
            end_stream,
            end_headers: true,
            priority: None,
            block: &block,
            padding: None,
        })
    }

    pub fn data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> Result<(), spillway_h2::H2Error> {
        self.frame(Frame::Data { stream, end_stream, data, padding: None })
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Parses and drains everything the server wrote.
    pub fn take_output(&mut self) -> Vec<Out> {
        let bytes = self.conn.output().to_vec();
        self.conn.consumed(bytes.len());
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while let Some((f, n)) =
            Frame::parse(rest, MAX_MAX_FRAME_SIZE).expect("server frames are valid")
        {
            rest = &rest[n..];
            out.push(match f {
                Frame::Settings { ack, params } => Out::Settings {
                    ack,
                    params: spillway_h2::frame::settings_params(params).collect(),
                },
                Frame::Headers { stream, end_stream, block, .. } => {
                    let mut fields = Vec::new();
                    self.dec
                        .decode(block, |n, v| {
                            fields.push((
                                String::from_utf8_lossy(n).into_owned(),
                                String::from_utf8_lossy(v).into_owned(),
                            ))
                        })
                        .expect("server HPACK is valid");
                    Out::Headers { stream, end_stream, fields }
                }
                Frame::Data { stream, end_stream, data, .. } => {
                    Out::Data { stream, end_stream, data: data.to_vec() }
                }
                Frame::RstStream { stream, code } => Out::Rst { stream, code },
                Frame::Ping { ack, payload } => Out::Ping { ack, payload },
                Frame::GoAway { last_stream, code, .. } => Out::GoAway { last_stream, code },
                Frame::WindowUpdate { stream, increment } => Out::Window { stream, increment },
                other => panic!("unexpected frame from the server: {other:?}"),
            });
        }
        assert!(rest.is_empty(), "trailing partial frame");
        out
    }
}
