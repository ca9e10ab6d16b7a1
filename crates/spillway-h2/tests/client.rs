//! [`spillway_h2::ClientConnection`] against a scripted server built from the crate's own
//! codec: handshake, requests and responses, interim heads, trailers, flow control both ways,
//! stream limits, resets, GOAWAY refusals, response validation and the flood limits.
#![allow(clippy::unwrap_used)]

use spillway_h2::frame::{flag, kind, setting, Frame, FrameHeader, MAX_MAX_FRAME_SIZE};
use spillway_h2::hpack::{Decoder, Encoder, Indexing};
use spillway_h2::{
    ClientConnection, ClientEvent, ClientSettings, ErrorCode, RequestError, RequestLine, PREFACE,
};
use std::time::Instant;

/// A frame the client sent, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Settings { ack: bool, params: Vec<(u16, u32)> },
    Headers { stream: u32, end_stream: bool, fields: Vec<(String, String)> },
    Data { stream: u32, end_stream: bool, len: usize },
    Rst { stream: u32, code: ErrorCode },
    Ping { ack: bool },
    GoAway { code: ErrorCode },
    Window { stream: u32, increment: u32 },
}

struct Server {
    conn: ClientConnection,
    enc: Encoder,
    dec: Decoder,
    partial: Vec<u8>,
    partial_stream: Option<(u32, bool)>,
}

const GET: RequestLine<'static> =
    RequestLine { method: b"GET", scheme: b"http", authority: b"up.test", path: b"/" };
const POST: RequestLine<'static> =
    RequestLine { method: b"POST", scheme: b"http", authority: b"up.test", path: b"/upload" };
const NO_FIELDS: [(&[u8], &[u8]); 0] = [];

impl Server {
    /// A client past the handshake: the server's SETTINGS (`params`) sent, output drained.
    fn connected(settings: ClientSettings, params: &[(u16, u32)]) -> Server {
        let mut s = Server {
            conn: ClientConnection::new(settings),
            enc: Encoder::new(4096),
            dec: Decoder::new(4096, usize::MAX),
            partial: Vec::new(),
            partial_stream: None,
        };
        assert_eq!(&s.conn.output()[..24], PREFACE);
        let n = s.conn.output().len();
        let first = s.conn.output()[24..].to_vec();
        s.conn.consumed(n);
        let out = s.parse(&first);
        assert!(
            matches!(&out[0], Out::Settings { ack: false, params } if params.contains(&(setting::ENABLE_PUSH, 0))),
            "{out:?}"
        );
        let mut b = Vec::new();
        frame_settings(params, &mut b);
        s.feed(&b).unwrap();
        assert_eq!(s.output(), vec![Out::Settings { ack: true, params: vec![] }]);
        s
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<usize, spillway_h2::H2Error> {
        self.conn.recv(bytes, Instant::now())
    }

    fn frame(&mut self, f: Frame<'_>) -> Result<usize, spillway_h2::H2Error> {
        let mut b = Vec::new();
        f.encode(&mut b);
        self.feed(&b)
    }

    fn headers(
        &mut self,
        stream: u32,
        fields: &[(&str, &str)],
        end_stream: bool,
    ) -> Result<usize, spillway_h2::H2Error> {
        let mut block = Vec::new();
        for (n, v) in fields {
            self.enc.encode_field_as(n.as_bytes(), v.as_bytes(), Indexing::Incremental, &mut block);
        }
        self.frame(Frame::Headers {
            stream,
            end_stream,
            end_headers: true,
            priority: None,
            block: &block,
            padding: None,
        })
    }

    fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        self.frame(Frame::Data { stream, end_stream, data, padding: None }).unwrap();
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn output(&mut self) -> Vec<Out> {
        let bytes = self.conn.output().to_vec();
        self.conn.consumed(bytes.len());
        self.parse(&bytes)
    }

    fn parse(&mut self, mut bytes: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        while let Some((f, n)) = Frame::parse(bytes, MAX_MAX_FRAME_SIZE).expect("valid frames") {
            bytes = &bytes[n..];
            match f {
                Frame::Settings { ack, params } => out.push(Out::Settings {
                    ack,
                    params: spillway_h2::frame::settings_params(params).collect(),
                }),
                Frame::Headers { stream, end_stream, end_headers, block, .. } => {
                    self.partial = block.to_vec();
                    self.partial_stream = Some((stream, end_stream));
                    if end_headers {
                        out.push(self.finish_block());
                    }
                }
                Frame::Continuation { end_headers, block, .. } => {
                    self.partial.extend_from_slice(block);
                    if end_headers {
                        out.push(self.finish_block());
                    }
                }
                Frame::Data { stream, end_stream, data, .. } => {
                    out.push(Out::Data { stream, end_stream, len: data.len() })
                }
                Frame::RstStream { stream, code } => out.push(Out::Rst { stream, code }),
                Frame::Ping { ack, .. } => out.push(Out::Ping { ack }),
                Frame::GoAway { code, .. } => out.push(Out::GoAway { code }),
                Frame::WindowUpdate { stream, increment } => {
                    out.push(Out::Window { stream, increment })
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        assert!(bytes.is_empty());
        out
    }

    fn finish_block(&mut self) -> Out {
        let (stream, end_stream) = self.partial_stream.take().unwrap();
        let mut fields = Vec::new();
        let block = std::mem::take(&mut self.partial);
        self.dec
            .decode(&block, |n, v| {
                fields.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ))
            })
            .unwrap();
        Out::Headers { stream, end_stream, fields }
    }
}

fn frame_settings(params: &[(u16, u32)], out: &mut Vec<u8>) {
    spillway_h2::frame::write_settings(out, params);
}

fn default_server() -> Server {
    Server::connected(ClientSettings::default(), &[])
}

#[test]
fn preface_settings_and_window_go_out_first_and_server_settings_are_acked() {
    let mut s = Server {
        conn: ClientConnection::new(ClientSettings::default()),
        enc: Encoder::new(4096),
        dec: Decoder::new(4096, usize::MAX),
        partial: Vec::new(),
        partial_stream: None,
    };
    let bytes = s.conn.output().to_vec();
    assert_eq!(&bytes[..24], PREFACE);
    let out = s.parse(&bytes[24..]);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], Out::Settings { ack: false, params }
        if params.contains(&(setting::INITIAL_WINDOW_SIZE, 1024 * 1024))));
    assert_eq!(out[1], Out::Window { stream: 0, increment: 4 * 1024 * 1024 - 65_535 });
    // A first frame other than SETTINGS is a connection error.
    let mut b = Vec::new();
    Frame::Ping { ack: false, payload: [0; 8] }.encode(&mut b);
    let e = s.feed(&b).unwrap_err();
    assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    assert!(s.conn.is_closed());
}

#[test]
fn get_with_response_body_and_trailers() {
    let mut s = default_server();
    let id =
        s.conn.send_request(GET, [(&b"te"[..], &b"trailers"[..]), (b"x-a", b"1")], true).unwrap();
    assert_eq!(id, 1);
    let out = s.output();
    let Out::Headers { stream: 1, end_stream: true, fields } = &out[0] else { panic!("{out:?}") };
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [":method", ":scheme", ":authority", ":path", "te", "x-a"]);
    s.headers(1, &[(":status", "100")], false).unwrap();
    s.headers(1, &[(":status", "200"), ("content-type", "application/grpc")], false).unwrap();
    s.data(1, b"hello", false);
    s.headers(1, &[("grpc-status", "0")], true).unwrap();
    let ev = s.events();
    assert_eq!(ev.len(), 3, "the interim head is skipped: {ev:?}");
    assert!(matches!(&ev[0], ClientEvent::Response { stream: 1, head, end_stream: false }
        if head.status == 200 && head.fields.get(b"content-type") == Some(&b"application/grpc"[..])));
    assert!(
        matches!(&ev[1], ClientEvent::Data { stream: 1, data, end_stream: false } if &data[..] == b"hello")
    );
    assert!(matches!(&ev[2], ClientEvent::Trailers { stream: 1, trailers }
        if trailers.get(b"grpc-status") == Some(&b"0"[..])));
    assert_eq!(s.conn.active_streams(), 0);
    // The next request takes the next odd id.
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true).unwrap(), 3);
}

#[test]
fn request_fields_are_checked() {
    let mut s = default_server();
    for bad in [
        (&b"Upper"[..], &b"x"[..]),
        (b"connection", b"close"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"gzip"),
        (b":path", b"/"),
        (b"x", b"a\nb"),
    ] {
        assert_eq!(s.conn.send_request(GET, [bad], true), Err(RequestError::InvalidField));
    }
    let no_path = RequestLine { path: b"", ..GET };
    assert_eq!(s.conn.send_request(no_path, NO_FIELDS, true), Err(RequestError::InvalidField));
    assert!(s.output().is_empty(), "nothing was sent");
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true), Ok(1));
}

#[test]
fn request_head_over_the_servers_header_list_size_is_refused() {
    let mut s =
        Server::connected(ClientSettings::default(), &[(setting::MAX_HEADER_LIST_SIZE, 200)]);
    let big = [b'a'; 200];
    assert_eq!(
        s.conn.send_request(GET, [(&b"x-big"[..], &big[..])], true),
        Err(RequestError::HeadTooLarge)
    );
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true), Ok(1));
}

#[test]
fn large_request_head_is_split_into_continuations() {
    let mut s = default_server();
    let big = vec![b'v'; 40_000];
    s.conn.send_request(GET, [(&b"x-big"[..], &big[..])], true).unwrap();
    let bytes = s.conn.output().to_vec();
    let first = FrameHeader::parse(&bytes).unwrap();
    assert_eq!(first.kind, kind::HEADERS);
    assert_eq!(first.flags & flag::END_HEADERS, 0);
    let out = s.output();
    assert!(matches!(&out[..], [Out::Headers { fields, .. }] if fields[4].1.len() == 40_000));
}

#[test]
fn request_body_respects_send_windows_and_resumes_on_window_update() {
    let mut s =
        Server::connected(ClientSettings::default(), &[(setting::INITIAL_WINDOW_SIZE, 1000)]);
    let id = s.conn.send_request(POST, NO_FIELDS, false).unwrap();
    let body = vec![7u8; 3000];
    assert_eq!(s.conn.send_capacity(id), 1000);
    assert_eq!(s.conn.send_data(id, &body, true).unwrap(), 1000);
    assert_eq!(s.conn.send_data(id, &body[1000..], true).unwrap(), 0, "stream window spent");
    s.frame(Frame::WindowUpdate { stream: id, increment: 5000 }).unwrap();
    assert!(matches!(s.events()[..], [ClientEvent::WindowUpdate { stream: 1 }]));
    assert_eq!(s.conn.send_data(id, &body[1000..], true).unwrap(), 2000);
    let out = s.output();
    let data: Vec<_> = out.iter().filter(|o| matches!(o, Out::Data { .. })).collect();
    assert_eq!(
        data,
        [
            &Out::Data { stream: 1, end_stream: false, len: 1000 },
            &Out::Data { stream: 1, end_stream: true, len: 2000 }
        ]
    );
    // The connection window (65535 by default) bounds all streams together.
    let id2 = s.conn.send_request(POST, NO_FIELDS, false).unwrap();
    s.frame(Frame::WindowUpdate { stream: id2, increment: 200_000 }).unwrap();
    let big = vec![0u8; 100_000];
    assert_eq!(s.conn.send_data(id2, &big, false).unwrap(), 65_535 - 3000);
    assert_eq!(s.conn.send_data(id, b"x", false), Err(spillway_h2::SendError::StreamEnded));
}

#[test]
fn settings_shrinking_the_initial_window_can_leave_it_negative() {
    let mut s = default_server();
    let id = s.conn.send_request(POST, NO_FIELDS, false).unwrap();
    assert_eq!(s.conn.send_data(id, &[1u8; 10_000], false).unwrap(), 10_000);
    let mut b = Vec::new();
    frame_settings(&[(setting::INITIAL_WINDOW_SIZE, 5_000)], &mut b);
    s.feed(&b).unwrap();
    assert_eq!(s.conn.send_capacity(id), 0);
    s.frame(Frame::WindowUpdate { stream: id, increment: 5_001 }).unwrap();
    assert_eq!(s.conn.send_capacity(id), 1);
}

#[test]
fn response_body_flow_control_returns_window_as_the_application_releases() {
    let settings = ClientSettings {
        initial_window_size: 20_000,
        connection_window_size: 65_535,
        ..ClientSettings::default()
    };
    let mut s = Server::connected(settings, &[]);
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.output();
    s.headers(id, &[(":status", "200")], false).unwrap();
    s.data(id, &[0u8; 15_000], false);
    s.data(id, &[0u8; 5_000], false);
    // Beyond the stream window: a stream error, not a connection error.
    s.frame(Frame::Data { stream: id, end_stream: false, data: &[0u8; 1], padding: None }).unwrap();
    let ev = s.events();
    assert!(
        matches!(ev.last(), Some(ClientEvent::Reset { stream: 1, code }) if *code == ErrorCode::FLOW_CONTROL_ERROR),
        "{ev:?}"
    );
    assert!(s.output().contains(&Out::Rst { stream: 1, code: ErrorCode::FLOW_CONTROL_ERROR }));

    // Release drives WINDOW_UPDATEs for the stream and the connection.
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.output();
    s.headers(id, &[(":status", "200")], false).unwrap();
    s.data(id, &[0u8; 12_000], false);
    s.events();
    assert!(s.output().iter().all(|o| !matches!(o, Out::Window { stream: 3, .. })));
    s.conn.release_capacity(id, 12_000);
    let out = s.output();
    assert!(out.contains(&Out::Window { stream: 3, increment: 12_000 }), "{out:?}");
}

#[test]
fn a_dropped_stream_returns_its_unreleased_bytes_to_the_connection_window() {
    let settings = ClientSettings { connection_window_size: 65_535, ..ClientSettings::default() };
    let mut s = Server::connected(settings, &[]);
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.headers(id, &[(":status", "200")], false).unwrap();
    for _ in 0..3 {
        s.data(id, &[0u8; 12_000], false);
    }
    s.events();
    s.output();
    s.conn.reset(id, ErrorCode::CANCEL);
    let out = s.output();
    assert!(out.contains(&Out::Rst { stream: 1, code: ErrorCode::CANCEL }), "{out:?}");
    assert!(out.contains(&Out::Window { stream: 0, increment: 36_000 }), "{out:?}");
    // Late DATA on the reset stream is dropped (its window returned), not an error.
    s.data(id, &[0u8; 16_000], false);
    assert!(s.events().is_empty());
    assert!(!s.conn.is_closed());
}

#[test]
fn max_concurrent_streams_from_the_server_is_respected() {
    let mut s =
        Server::connected(ClientSettings::default(), &[(setting::MAX_CONCURRENT_STREAMS, 2)]);
    assert_eq!(s.conn.max_concurrent_streams(), 2);
    let a = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    assert!(!s.conn.can_open());
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true), Err(RequestError::NoCapacity));
    s.headers(a, &[(":status", "204")], true).unwrap();
    s.events();
    assert!(s.conn.can_open());
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true), Ok(5));
}

#[test]
fn goaway_refuses_streams_above_the_last_id_and_lets_the_others_finish() {
    let mut s = default_server();
    for _ in 0..3 {
        s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    }
    s.frame(Frame::GoAway { last_stream: 1, code: ErrorCode::NO_ERROR, debug: b"" }).unwrap();
    let ev = s.events();
    let refused: Vec<u32> = ev
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Refused { stream } => Some(*stream),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.contains(&3) && refused.contains(&5));
    assert!(matches!(ev.last(), Some(ClientEvent::GoAway { last_stream: 1, .. })));
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true), Err(RequestError::GoingAway));
    assert!(!s.conn.wants_close(), "stream 1 is still live");
    s.headers(1, &[(":status", "200")], true).unwrap();
    assert!(matches!(s.events()[..], [ClientEvent::Response { stream: 1, .. }]));
    assert!(s.conn.wants_close());
}

#[test]
fn refused_stream_reset_before_a_response_is_reported_as_refused() {
    let mut s = default_server();
    let a = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    let b = s.conn.send_request(POST, NO_FIELDS, false).unwrap();
    s.frame(Frame::RstStream { stream: a, code: ErrorCode::REFUSED_STREAM }).unwrap();
    s.headers(b, &[(":status", "200")], false).unwrap();
    s.frame(Frame::RstStream { stream: b, code: ErrorCode::REFUSED_STREAM }).unwrap();
    let ev = s.events();
    assert!(matches!(ev[0], ClientEvent::Refused { stream: 1 }), "{ev:?}");
    assert!(
        matches!(ev[2], ClientEvent::Reset { stream: 3, code } if code == ErrorCode::REFUSED_STREAM),
        "after a response head it is a reset: {ev:?}"
    );
}

#[test]
fn early_response_then_no_error_reset_stops_the_upload() {
    let mut s = default_server();
    let id = s.conn.send_request(POST, NO_FIELDS, false).unwrap();
    s.headers(id, &[(":status", "413")], true).unwrap();
    assert!(s.conn.is_live(id), "we still send");
    s.frame(Frame::RstStream { stream: id, code: ErrorCode::NO_ERROR }).unwrap();
    let ev = s.events();
    assert!(matches!(ev[0], ClientEvent::Response { end_stream: true, .. }));
    assert!(matches!(ev[1], ClientEvent::Reset { code: ErrorCode::NO_ERROR, .. }));
    assert!(!s.conn.is_live(id));
    assert_eq!(s.conn.send_data(id, b"x", true), Err(spillway_h2::SendError::UnknownStream));
}

#[test]
fn malformed_responses_reset_the_stream_only() {
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[("x", "y")], false),
        (&[(":status", "abc")], false),
        (&[(":status", "101")], false),
        (&[(":status", "200"), (":path", "/")], false),
        (&[(":status", "200"), ("connection", "keep-alive")], false),
        (&[(":status", "200"), ("Bad", "x")], false),
        (&[(":status", "100")], true),
        (&[(":status", "200"), ("content-length", "5")], true),
    ];
    for (fields, end) in cases {
        let mut s = default_server();
        let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
        s.output();
        s.headers(id, fields, *end).unwrap();
        let ev = s.events();
        assert!(
            matches!(ev[..], [ClientEvent::Reset { code: ErrorCode::PROTOCOL_ERROR, .. }]),
            "{fields:?}: {ev:?}"
        );
        assert_eq!(s.output(), vec![Out::Rst { stream: id, code: ErrorCode::PROTOCOL_ERROR }]);
        assert!(!s.conn.is_closed());
        // The connection goes on.
        assert!(s.conn.send_request(GET, NO_FIELDS, true).is_ok());
    }
}

#[test]
fn body_checks_content_length_data_before_head_and_trailers_without_end() {
    let mut s = default_server();
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.data(id, b"early", false);
    assert!(matches!(s.events()[..], [ClientEvent::Reset { code: ErrorCode::PROTOCOL_ERROR, .. }]));

    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.headers(id, &[(":status", "200"), ("content-length", "3")], false).unwrap();
    s.data(id, b"four", true);
    let ev = s.events();
    assert!(matches!(ev[..], [ClientEvent::Response { .. }, ClientEvent::Reset { .. }]), "{ev:?}");

    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.headers(id, &[(":status", "200")], false).unwrap();
    s.headers(id, &[("grpc-status", "0")], false).unwrap();
    let ev = s.events();
    assert!(matches!(ev[..], [ClientEvent::Response { .. }, ClientEvent::Reset { .. }]), "{ev:?}");

    // HEAD: content-length describes no body.
    let head = RequestLine { method: b"HEAD", ..GET };
    let id = s.conn.send_request(head, NO_FIELDS, true).unwrap();
    s.headers(id, &[(":status", "200"), ("content-length", "100")], true).unwrap();
    assert!(matches!(s.events()[..], [ClientEvent::Response { end_stream: true, .. }]));
}

#[test]
fn protocol_violations_on_the_connection_end_it_with_goaway() {
    // PUSH_PROMISE with push disabled.
    let mut s = default_server();
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.output();
    let mut b = Vec::new();
    FrameHeader { len: 4, kind: kind::PUSH_PROMISE, flags: flag::END_HEADERS, stream: id }
        .write(&mut b);
    b.extend_from_slice(&2u32.to_be_bytes());
    assert_eq!(s.feed(&b).unwrap_err().code, ErrorCode::PROTOCOL_ERROR);
    assert!(matches!(s.output()[..], [Out::GoAway { code: ErrorCode::PROTOCOL_ERROR }]));
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true), Err(RequestError::ConnectionClosed));

    // HEADERS on a stream we never opened.
    let mut s = default_server();
    assert!(s.headers(7, &[(":status", "200")], true).is_err());
    // ENABLE_PUSH = 1 from a server.
    let mut s = default_server();
    let mut b = Vec::new();
    frame_settings(&[(setting::ENABLE_PUSH, 1)], &mut b);
    assert!(s.feed(&b).is_err());
    // A connection window overflow.
    let mut s = default_server();
    assert!(s.frame(Frame::WindowUpdate { stream: 0, increment: (1 << 31) - 1 }).is_err());
}

#[test]
fn continuation_flood_and_oversized_blocks_end_the_connection() {
    let mut s = default_server();
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.frame(Frame::Headers {
        stream: id,
        end_stream: false,
        end_headers: false,
        priority: None,
        block: &[0x88],
        padding: None,
    })
    .unwrap();
    let mut err = None;
    for _ in 0..40 {
        if let Err(e) = s.frame(Frame::Continuation { stream: id, end_headers: false, block: b"" })
        {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err.map(|e| e.code), Some(ErrorCode::ENHANCE_YOUR_CALM));

    // A response head over the header list size resets the stream.
    let settings = ClientSettings { max_header_list_size: 1000, ..ClientSettings::default() };
    let mut s = Server::connected(settings, &[]);
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    let big = "x".repeat(2000);
    s.headers(id, &[(":status", "200"), ("x-big", &big)], false).unwrap();
    assert!(matches!(s.events()[..], [ClientEvent::Reset { .. }]));
    assert!(!s.conn.is_closed());
}

#[test]
fn ping_and_settings_floods_are_capped_but_answered() {
    let mut s = default_server();
    let mut b = Vec::new();
    Frame::Ping { ack: false, payload: [1; 8] }.encode(&mut b);
    s.feed(&b).unwrap();
    assert_eq!(s.output(), vec![Out::Ping { ack: true }]);
    let mut flood = Vec::new();
    for _ in 0..100 {
        Frame::Ping { ack: false, payload: [1; 8] }.encode(&mut flood);
    }
    assert_eq!(s.feed(&flood).unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn too_many_interim_heads_and_empty_data_frames_are_refused() {
    let mut s = default_server();
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    for _ in 0..9 {
        s.headers(id, &[(":status", "103")], false).unwrap();
    }
    assert!(matches!(s.events()[..], [ClientEvent::Reset { .. }]));

    let mut s = default_server();
    let id = s.conn.send_request(GET, NO_FIELDS, true).unwrap();
    s.headers(id, &[(":status", "200")], false).unwrap();
    let mut flood = Vec::new();
    for _ in 0..100 {
        Frame::Data { stream: id, end_stream: false, data: b"", padding: None }.encode(&mut flood);
    }
    assert_eq!(s.feed(&flood).unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn request_trailers_end_the_stream_and_our_goaway_stops_new_streams() {
    let mut s = default_server();
    let id = s.conn.send_request(POST, NO_FIELDS, false).unwrap();
    s.conn.send_data(id, b"abc", false).unwrap();
    s.conn.send_trailers(id, [(&b"x-sum"[..], &b"1"[..])]).unwrap();
    let out = s.output();
    assert!(
        matches!(out.last(), Some(Out::Headers { end_stream: true, fields, .. }) if fields[0].0 == "x-sum")
    );
    assert_eq!(s.conn.send_data(id, b"x", true), Err(spillway_h2::SendError::StreamEnded));
    s.conn.go_away(ErrorCode::NO_ERROR);
    assert_eq!(s.conn.send_request(GET, NO_FIELDS, true), Err(RequestError::GoingAway));
}

#[test]
fn an_idle_connection_keeps_only_its_hpack_tables() {
    let mut s = default_server();
    for _ in 0..20 {
        let id = s.conn.send_request(POST, [(&b"x-a"[..], &b"1"[..])], false).unwrap();
        assert_eq!(s.conn.send_data(id, &[1u8; 10_000], true).unwrap(), 10_000);
        s.frame(Frame::WindowUpdate { stream: 0, increment: 10_000 }).unwrap();
        s.headers(id, &[(":status", "200"), ("x-b", "2")], false).unwrap();
        s.data(id, &[2u8; 10_000], true);
        for ev in s.events() {
            if let ClientEvent::Data { stream, data, .. } = ev {
                s.conn.release_capacity(stream, data.len());
            }
        }
        s.output();
    }
    assert_eq!(s.conn.active_streams(), 0);
    assert!(s.conn.poll_event().is_none());
    let tables = 2 * 4096;
    assert!(s.conn.heap_bytes() <= tables, "idle client holds {} bytes", s.conn.heap_bytes());
}

#[test]
fn initial_window_values_apply_in_order_so_a_passing_overflow_is_a_connection_error() {
    let mut s = default_server();
    let id = s.conn.send_request(POST, NO_FIELDS, false).unwrap();
    s.frame(Frame::WindowUpdate { stream: id, increment: 1_000 }).unwrap();
    // 65_535 -> 2^31-1 -> 65_535: the first step takes the stream's 66_535 past 2^31-1.
    let mut b = Vec::new();
    frame_settings(
        &[(setting::INITIAL_WINDOW_SIZE, 0x7fff_ffff), (setting::INITIAL_WINDOW_SIZE, 65_535)],
        &mut b,
    );
    assert_eq!(s.feed(&b).unwrap_err().code, ErrorCode::FLOW_CONTROL_ERROR);
    assert!(s.conn.is_closed());
}

#[test]
fn settings_the_server_has_not_acked_by_the_deadline_are_overdue() {
    let t0 = Instant::now();
    let secs = |n| t0 + std::time::Duration::from_secs(n);
    let mut s = default_server();
    s.conn.set_settings_deadline(secs(10));
    assert!(!s.conn.settings_overdue(secs(9)));
    assert!(s.conn.settings_overdue(secs(10)), "the server's SETTINGS are no ACK of ours");
    s.conn.go_away(ErrorCode::SETTINGS_TIMEOUT);
    assert_eq!(s.output(), vec![Out::GoAway { code: ErrorCode::SETTINGS_TIMEOUT }]);
    assert!(!s.conn.settings_overdue(secs(11)), "closed: nothing left to time out");

    let mut s = default_server();
    s.conn.set_settings_deadline(secs(10));
    s.frame(Frame::Settings { ack: true, params: &[] }).unwrap();
    assert!(!s.conn.settings_overdue(secs(10)));
    assert_eq!(s.conn.settings_deadline(), None);
}
