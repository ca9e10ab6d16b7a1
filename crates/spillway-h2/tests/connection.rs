//! Behaviour of the server connection state machine, driven frame by frame with a scripted
//! client: handshake, requests and responses, flow control both ways, stream state rules,
//! GOAWAY, and the flood protections.

mod common;

use common::{get, post, Client, Out};
use spillway_h2::frame::{setting, Frame, FrameHeader, Priority};
use spillway_h2::{Connection, ErrorCode, Event, SendError, ServerSettings, PREFACE};
use std::time::Duration;

fn settings() -> ServerSettings {
    ServerSettings::default()
}

fn conn_error(out: &[Out]) -> Option<ErrorCode> {
    out.iter().find_map(|o| match o {
        Out::GoAway { code, .. } => Some(*code),
        _ => None,
    })
}

fn rst(out: &[Out], stream: u32) -> Option<ErrorCode> {
    out.iter().find_map(|o| match o {
        Out::Rst { stream: s, code } if *s == stream => Some(*code),
        _ => None,
    })
}

#[test]
fn server_sends_settings_first_and_acks_the_clients() {
    let mut c = Client::raw(settings());
    let out = c.take_output();
    let Out::Settings { ack: false, params } = &out[0] else { panic!("{out:?}") };
    assert!(params.contains(&(setting::MAX_CONCURRENT_STREAMS, 100)));
    assert!(params.contains(&(setting::ENABLE_PUSH, 0)));
    assert!(out.contains(&Out::Window { stream: 0, increment: 1024 * 1024 - 65_535 }));
    // The preface may arrive in pieces.
    c.feed(&PREFACE[..5]).unwrap();
    c.feed(&PREFACE[5..]).unwrap();
    c.frame(Frame::Settings { ack: false, params: &[] }).unwrap();
    assert_eq!(c.take_output(), vec![Out::Settings { ack: true, params: vec![] }]);
}

#[test]
fn bad_preface_and_non_settings_first_frame_are_protocol_errors() {
    let mut c = Client::raw(settings());
    c.take_output();
    assert_eq!(c.feed(b"GET / HTTP/1.1\r\n").unwrap_err().code, ErrorCode::PROTOCOL_ERROR);
    assert_eq!(conn_error(&c.take_output()), Some(ErrorCode::PROTOCOL_ERROR));
    assert!(c.conn.is_closed());

    let mut c = Client::raw(settings());
    c.feed(PREFACE).unwrap();
    assert_eq!(
        c.frame(Frame::Ping { ack: false, payload: [0; 8] }).unwrap_err().code,
        ErrorCode::PROTOCOL_ERROR
    );
}

#[test]
fn ping_is_acked_with_the_same_payload() {
    let mut c = Client::connected(settings());
    c.frame(Frame::Ping { ack: false, payload: *b"12345678" }).unwrap();
    c.frame(Frame::Ping { ack: true, payload: *b"ignored!" }).unwrap();
    assert_eq!(c.take_output(), vec![Out::Ping { ack: true, payload: *b"12345678" }]);
}

#[test]
fn ping_sends_a_probe_and_its_ack_is_taken_quietly() {
    let mut c = Client::connected(settings());
    c.conn.ping(*b"probe-01");
    assert_eq!(c.take_output(), vec![Out::Ping { ack: false, payload: *b"probe-01" }]);
    c.frame(Frame::Ping { ack: true, payload: *b"probe-01" }).unwrap();
    assert!(c.take_output().is_empty(), "an ACK is not answered");
    assert!(c.events().is_empty());
}

#[test]
fn get_request_becomes_an_event_and_the_response_leaves_in_frames() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/hello?x=1"), true).unwrap();
    let events = c.events();
    let [Event::Request { stream: 1, head, end_stream: true }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(head.method(), b"GET");
    assert_eq!(head.path(), Some(&b"/hello?x=1"[..]));
    assert_eq!(head.authority(), Some(&b"example.test"[..]));

    c.conn
        .send_response(1, 200, &[(b"content-type", b"text/plain"), (b"server", b"spillway")], false)
        .unwrap();
    assert_eq!(c.conn.send_data(1, b"hello", true).unwrap(), 5);
    let out = c.take_output();
    assert_eq!(
        out,
        vec![
            Out::Headers {
                stream: 1,
                end_stream: false,
                fields: vec![
                    (":status".into(), "200".into()),
                    ("content-type".into(), "text/plain".into()),
                    ("server".into(), "spillway".into())
                ],
            },
            Out::Data { stream: 1, end_stream: true, data: b"hello".to_vec() },
        ]
    );
    assert_eq!(c.conn.active_streams(), 0);
    assert_eq!(c.conn.send_data(1, b"more", true), Err(SendError::UnknownStream));
}

#[test]
fn fields_from_an_iterator_leave_as_the_slice_forms_do_and_are_checked_alike() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    let names: [&[u8]; 2] = [b"content-type", b"x-n"];
    let values: [&[u8]; 2] = [b"text/plain", b"7"];
    let fields = names.iter().copied().zip(values.iter().copied());
    c.conn.send_response_fields(1, 200, fields, false).unwrap();
    c.conn.send_trailers_fields(1, [(&b"grpc-status"[..], &b"0"[..])]).unwrap();
    assert_eq!(
        c.take_output(),
        vec![
            Out::Headers {
                stream: 1,
                end_stream: false,
                fields: vec![
                    (":status".into(), "200".into()),
                    ("content-type".into(), "text/plain".into()),
                    ("x-n".into(), "7".into())
                ],
            },
            Out::Headers {
                stream: 1,
                end_stream: true,
                fields: vec![("grpc-status".into(), "0".into())],
            },
        ]
    );
    c.headers(3, &get("/"), true).unwrap();
    let bad = [(&b"connection"[..], &b"close"[..])];
    assert_eq!(c.conn.send_response_fields(3, 200, bad, true), Err(SendError::InvalidField));
    assert!(c.take_output().is_empty(), "nothing is written for a refused head");
}

#[test]
fn repeated_response_fields_are_indexed_once() {
    let mut c = Client::connected(settings());
    let mut sizes = Vec::new();
    for stream in [1, 3] {
        c.headers(stream, &get("/"), true).unwrap();
        c.conn
            .send_response(
                stream,
                200,
                &[(b"server", b"spillway"), (b"content-type", b"application/grpc")],
                true,
            )
            .unwrap();
        sizes.push(c.conn.output().len());
        c.take_output();
    }
    assert_eq!(sizes[1], 9 + 3, "second head is three index bytes");
}

#[test]
fn request_body_windows_are_returned_in_batches_as_the_application_releases() {
    let s =
        ServerSettings { initial_window_size: 1000, connection_window_size: 65_535, ..settings() };
    let mut c = Client::connected(s);
    c.headers(1, &post("/up"), false).unwrap();
    c.data(1, &[7; 300], false).unwrap();
    c.data(1, &[7; 300], false).unwrap();
    let events = c.events();
    assert!(
        matches!(events[1], Event::Data { stream: 1, ref data, end_stream: false } if data.len() == 300)
    );
    c.conn.release_capacity(1, 300);
    assert_eq!(c.take_output(), vec![], "less than half the window released: no update yet");
    c.conn.release_capacity(1, 300);
    assert_eq!(c.take_output(), vec![Out::Window { stream: 1, increment: 600 }]);
    // 400 left + 600 returned: 1000 more may come, 1001 may not.
    c.data(1, &[7; 1000], false).unwrap();
    c.data(1, &[7; 1], false).unwrap();
    let out = c.take_output();
    assert_eq!(rst(&out, 1), Some(ErrorCode::FLOW_CONTROL_ERROR));
    assert!(c
        .events()
        .iter()
        .any(|e| matches!(e, Event::Reset { stream: 1, code: ErrorCode::FLOW_CONTROL_ERROR })));
}

#[test]
fn connection_window_overrun_is_a_connection_error() {
    let s = ServerSettings {
        initial_window_size: 100_000,
        connection_window_size: 65_535,
        ..settings()
    };
    let mut c = Client::connected(s);
    c.headers(1, &post("/"), false).unwrap();
    for _ in 0..3 {
        c.data(1, &[0; 16_384], false).unwrap();
    }
    c.data(1, &[0; 16_383], false).unwrap();
    let err = c.data(1, &[0; 2], false).unwrap_err();
    assert_eq!(err.code, ErrorCode::FLOW_CONTROL_ERROR);
    assert_eq!(conn_error(&c.take_output()), Some(ErrorCode::FLOW_CONTROL_ERROR));
}

#[test]
fn padding_counts_against_the_window_and_is_returned_by_the_server() {
    let s =
        ServerSettings { initial_window_size: 100, connection_window_size: 65_535, ..settings() };
    let mut c = Client::connected(s);
    c.headers(1, &post("/"), false).unwrap();
    c.frame(Frame::Data { stream: 1, end_stream: false, data: b"ab", padding: Some(60) }).unwrap();
    // 63 bytes of window used, 61 of them padding: returned without the application.
    assert_eq!(c.take_output(), vec![Out::Window { stream: 1, increment: 61 }]);
}

#[test]
fn send_data_takes_only_what_the_windows_allow() {
    let mut c = Client::connected(settings());
    c.frame(Frame::Settings { ack: false, params: &[0, 4, 0, 0, 0, 10] }).unwrap(); // initial window 10
    c.headers(1, &get("/"), true).unwrap();
    c.events();
    c.conn.send_response(1, 200, &[], false).unwrap();
    assert_eq!(c.conn.send_data(1, &[1; 25], true).unwrap(), 10);
    assert_eq!(c.conn.send_data(1, &[1; 15], true).unwrap(), 0);
    c.take_output();
    c.frame(Frame::WindowUpdate { stream: 1, increment: 100 }).unwrap();
    assert!(matches!(c.events()[..], [Event::WindowUpdate { stream: 1 }]));
    assert_eq!(c.conn.send_capacity(1), 100);
    assert_eq!(c.conn.send_data(1, &[1; 15], true).unwrap(), 15);
    assert_eq!(c.take_output(), vec![Out::Data { stream: 1, end_stream: true, data: vec![1; 15] }]);
}

#[test]
fn settings_change_shifts_open_stream_windows_possibly_negative() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    c.conn.send_response(1, 200, &[], false).unwrap();
    assert_eq!(c.conn.send_data(1, &[0; 1000], false).unwrap(), 1000);
    c.frame(Frame::Settings { ack: false, params: &[0, 4, 0, 0, 0, 100] }).unwrap(); // 65535 -> 100
    assert_eq!(c.conn.send_capacity(1), 0, "window is 100 - 1000 < 0");
    c.frame(Frame::WindowUpdate { stream: 1, increment: 950 }).unwrap();
    assert_eq!(c.conn.send_capacity(1), 50);
}

#[test]
fn window_overflow_is_flow_control_error_on_stream_and_connection() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), false).unwrap();
    c.frame(Frame::WindowUpdate { stream: 1, increment: 0x7fff_ffff }).unwrap();
    assert_eq!(rst(&c.take_output(), 1), Some(ErrorCode::FLOW_CONTROL_ERROR));
    let err = c.frame(Frame::WindowUpdate { stream: 0, increment: 0x7fff_ffff }).unwrap_err();
    assert_eq!(err.code, ErrorCode::FLOW_CONTROL_ERROR);
}

#[test]
fn streams_beyond_max_concurrent_are_refused() {
    let mut c = Client::connected(ServerSettings { max_concurrent_streams: 2, ..settings() });
    for id in [1, 3, 5] {
        c.headers(id, &get("/"), true).unwrap();
    }
    assert_eq!(rst(&c.take_output(), 5), Some(ErrorCode::REFUSED_STREAM));
    assert_eq!(c.events().len(), 2);
    c.conn.send_response(1, 204, &[], true).unwrap();
    c.headers(7, &get("/"), true).unwrap();
    assert_eq!(c.events().len(), 1, "a slot freed up");
}

#[test]
fn rapid_reset_ends_the_connection_with_enhance_your_calm() {
    let s = ServerSettings {
        max_resets_per_window: 10,
        reset_window: Duration::from_secs(1),
        ..settings()
    };
    let mut c = Client::connected(s);
    let mut id = 1;
    // Ten resets per second, spread out: fine.
    for _ in 0..30 {
        c.headers(id, &get("/"), true).unwrap();
        c.frame(Frame::RstStream { stream: id, code: ErrorCode::CANCEL }).unwrap();
        c.now += Duration::from_millis(101);
        id += 2;
    }
    assert!(!c.conn.is_closed());
    // Eleven within one window: GOAWAY.
    let mut result = Ok(());
    for _ in 0..11 {
        c.headers(id, &get("/"), true).unwrap();
        result = c.frame(Frame::RstStream { stream: id, code: ErrorCode::CANCEL });
        id += 2;
    }
    assert_eq!(result.unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
    assert_eq!(conn_error(&c.take_output()), Some(ErrorCode::ENHANCE_YOUR_CALM));
}

#[test]
fn client_reset_is_reported_and_later_frames_on_it_are_tolerated() {
    let mut c = Client::connected(settings());
    c.headers(1, &post("/"), false).unwrap();
    c.frame(Frame::RstStream { stream: 1, code: ErrorCode::CANCEL }).unwrap();
    let ev = c.events();
    assert!(matches!(
        ev[..],
        [Event::Request { .. }, Event::Reset { stream: 1, code: ErrorCode::CANCEL }]
    ));
    assert_eq!(c.conn.send_response(1, 200, &[], true), Err(SendError::UnknownStream));
    c.frame(Frame::WindowUpdate { stream: 1, increment: 5 }).unwrap();
    c.frame(Frame::RstStream { stream: 1, code: ErrorCode::CANCEL }).unwrap();
    assert!(!c.conn.is_closed());
}

#[test]
fn header_block_split_over_continuations_is_assembled() {
    let mut c = Client::connected(settings());
    let block = c.block(&get("/split"));
    let (a, rest) = block.split_at(3);
    let (b, d) = rest.split_at(4);
    c.frame(Frame::Headers {
        stream: 1,
        end_stream: true,
        end_headers: false,
        priority: None,
        block: a,
        padding: None,
    })
    .unwrap();
    c.frame(Frame::Continuation { stream: 1, end_headers: false, block: b }).unwrap();
    assert!(c.events().is_empty());
    c.frame(Frame::Continuation { stream: 1, end_headers: true, block: d }).unwrap();
    let ev = c.events();
    assert!(
        matches!(&ev[..], [Event::Request { stream: 1, head, .. }] if head.path() == Some(&b"/split"[..]))
    );
}

#[test]
fn only_continuation_may_follow_an_unfinished_header_block() {
    let mut c = Client::connected(settings());
    let block = c.block(&get("/"));
    c.frame(Frame::Headers {
        stream: 1,
        end_stream: true,
        end_headers: false,
        priority: None,
        block: &block,
        padding: None,
    })
    .unwrap();
    let err = c.frame(Frame::Ping { ack: false, payload: [0; 8] }).unwrap_err();
    assert_eq!(err.code, ErrorCode::PROTOCOL_ERROR);

    let mut c = Client::connected(settings());
    let err =
        c.frame(Frame::Continuation { stream: 1, end_headers: true, block: &[] }).unwrap_err();
    assert_eq!(err.code, ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn continuation_flood_is_cut_off() {
    let mut c = Client::connected(ServerSettings { max_continuation_frames: 8, ..settings() });
    c.frame(Frame::Headers {
        stream: 1,
        end_stream: true,
        end_headers: false,
        priority: None,
        block: &[0x82],
        padding: None,
    })
    .unwrap();
    let mut result = Ok(());
    for _ in 0..9 {
        result = c.frame(Frame::Continuation { stream: 1, end_headers: false, block: &[] });
    }
    assert_eq!(result.unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);

    let mut c = Client::connected(ServerSettings { max_header_block_bytes: 1000, ..settings() });
    c.frame(Frame::Headers {
        stream: 1,
        end_stream: true,
        end_headers: false,
        priority: None,
        block: &[0x82],
        padding: None,
    })
    .unwrap();
    let err = c
        .frame(Frame::Continuation { stream: 1, end_headers: false, block: &[0x82; 1000] })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn ping_flood_without_reading_is_cut_off_but_drained_pings_are_fine() {
    let mut c = Client::connected(ServerSettings { max_queued_acks: 4, ..settings() });
    for _ in 0..20 {
        c.frame(Frame::Ping { ack: false, payload: [0; 8] }).unwrap();
        c.take_output();
    }
    let mut bytes = Vec::new();
    for _ in 0..5 {
        Frame::Ping { ack: false, payload: [0; 8] }.encode(&mut bytes);
    }
    assert_eq!(c.feed(&bytes).unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn malformed_requests_are_reset_without_an_event() {
    let mut c = Client::connected(settings());
    let mut bad = get("/");
    bad.push(("connection".into(), "keep-alive".into()));
    c.headers(1, &bad, true).unwrap();
    let mut ext = get("/chat");
    ext[0].1 = "CONNECT".into();
    ext.insert(1, (":protocol".into(), "websocket".into()));
    c.headers(3, &ext, true).unwrap();
    c.headers(5, &get("/ok"), true).unwrap();
    let out = c.take_output();
    assert_eq!(rst(&out, 1), Some(ErrorCode::PROTOCOL_ERROR));
    assert_eq!(rst(&out, 3), Some(ErrorCode::PROTOCOL_ERROR), "extended CONNECT refused");
    let ev = c.events();
    assert!(
        matches!(ev[..], [Event::Request { stream: 5, .. }]),
        "the HPACK state survived: {ev:?}"
    );
}

#[test]
fn trailers_both_ways() {
    let mut c = Client::connected(settings());
    c.headers(1, &post("/grpc"), false).unwrap();
    c.data(1, b"msg", false).unwrap();
    c.headers(1, &[("x-checksum".into(), "abc".into())], true).unwrap();
    let ev = c.events();
    let Event::Trailers { stream: 1, trailers } = &ev[2] else { panic!("{ev:?}") };
    assert_eq!(trailers.get(b"x-checksum"), Some(&b"abc"[..]));
    assert_eq!(
        c.conn.send_trailers(1, &[(b"grpc-status", b"0")]),
        Err(SendError::WrongState),
        "no head yet"
    );
    c.conn.send_response(1, 200, &[(b"content-type", b"application/grpc")], false).unwrap();
    c.conn.send_data(1, b"reply", false).unwrap();
    c.conn.send_trailers(1, &[(b"grpc-status", b"0")]).unwrap();
    let out = c.take_output();
    assert_eq!(
        out[2],
        Out::Headers {
            stream: 1,
            end_stream: true,
            fields: vec![("grpc-status".into(), "0".into())]
        }
    );
    assert_eq!(c.conn.active_streams(), 0);
}

#[test]
fn trailers_without_end_stream_or_with_pseudo_headers_are_malformed() {
    let mut c = Client::connected(settings());
    c.headers(1, &post("/"), false).unwrap();
    c.headers(1, &[("x".into(), "y".into())], false).unwrap();
    assert_eq!(rst(&c.take_output(), 1), Some(ErrorCode::PROTOCOL_ERROR));
    c.headers(3, &post("/"), false).unwrap();
    c.headers(3, &[(":path".into(), "/".into())], true).unwrap();
    assert_eq!(rst(&c.take_output(), 3), Some(ErrorCode::PROTOCOL_ERROR));
}

#[test]
fn content_length_must_match_the_data() {
    let mut c = Client::connected(settings());
    let mut head = post("/");
    head.push(("content-length".into(), "5".into()));
    c.headers(1, &head, false).unwrap();
    c.data(1, b"abc", true).unwrap();
    assert_eq!(rst(&c.take_output(), 1), Some(ErrorCode::PROTOCOL_ERROR));
    c.headers(3, &head, false).unwrap();
    c.data(3, b"abcdef", false).unwrap();
    assert_eq!(rst(&c.take_output(), 3), Some(ErrorCode::PROTOCOL_ERROR));
    c.headers(5, &head, false).unwrap();
    c.data(5, b"abcde", true).unwrap();
    assert_eq!(rst(&c.take_output(), 5), None);
}

#[test]
fn idle_and_closed_stream_rules() {
    // DATA on an idle stream.
    let mut c = Client::connected(settings());
    assert_eq!(c.data(1, b"x", false).unwrap_err().code, ErrorCode::PROTOCOL_ERROR);
    // WINDOW_UPDATE and RST_STREAM on idle streams.
    let mut c = Client::connected(settings());
    assert_eq!(
        c.frame(Frame::WindowUpdate { stream: 9, increment: 1 }).unwrap_err().code,
        ErrorCode::PROTOCOL_ERROR
    );
    let mut c = Client::connected(settings());
    assert_eq!(
        c.frame(Frame::RstStream { stream: 9, code: ErrorCode::CANCEL }).unwrap_err().code,
        ErrorCode::PROTOCOL_ERROR
    );
    // PRIORITY on an idle stream is fine and does not open it.
    let mut c = Client::connected(settings());
    c.frame(Frame::Priority {
        stream: 9,
        priority: Priority { dependency: 0, exclusive: false, weight: 0 },
    })
    .unwrap();
    c.headers(3, &get("/"), true).unwrap();
    assert_eq!(c.events().len(), 1);
    // Even stream ids and decreasing ids.
    assert_eq!(c.headers(2, &get("/"), true).unwrap_err().code, ErrorCode::PROTOCOL_ERROR);
    let mut c = Client::connected(settings());
    c.headers(5, &get("/"), true).unwrap();
    assert_eq!(c.headers(3, &get("/"), true).unwrap_err().code, ErrorCode::PROTOCOL_ERROR);
    // DATA after END_STREAM: stream error; HEADERS on a stream closed both ways: connection error.
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    c.data(1, b"late", false).unwrap();
    assert_eq!(rst(&c.take_output(), 1), Some(ErrorCode::STREAM_CLOSED));
    c.headers(3, &get("/"), true).unwrap();
    c.conn.send_response(3, 200, &[], true).unwrap();
    assert_eq!(c.headers(3, &get("/"), true).unwrap_err().code, ErrorCode::STREAM_CLOSED);
}

#[test]
fn priority_on_itself_is_a_stream_error_or_on_an_idle_stream_a_connection_error() {
    let mut c = Client::connected(settings());
    c.headers(1, &post("/"), false).unwrap();
    c.frame(Frame::Priority {
        stream: 1,
        priority: Priority { dependency: 1, exclusive: false, weight: 0 },
    })
    .unwrap();
    assert_eq!(rst(&c.take_output(), 1), Some(ErrorCode::PROTOCOL_ERROR));
    // No RST_STREAM may go to an idle stream: the connection ends instead.
    let err = c
        .frame(Frame::Priority {
            stream: 9,
            priority: Priority { dependency: 9, exclusive: false, weight: 0 },
        })
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PROTOCOL_ERROR);
}

#[test]
fn self_dependent_headers_are_refused_but_their_block_is_decoded() {
    let mut c = Client::connected(settings());
    let block = c.block(&get("/first"));
    let priority = Some(Priority { dependency: 1, exclusive: false, weight: 0 });
    c.frame(Frame::Headers {
        stream: 1,
        end_stream: true,
        end_headers: true,
        priority,
        block: &block,
        padding: None,
    })
    .unwrap();
    assert_eq!(rst(&c.take_output(), 1), Some(ErrorCode::PROTOCOL_ERROR));
    // The next block refers to entries the refused one added: HPACK stayed in step.
    c.headers(3, &get("/first"), true).unwrap();
    let ev = c.events();
    assert!(
        matches!(&ev[..], [Event::Request { stream: 3, head, .. }] if head.path() == Some(&b"/first"[..])),
        "{ev:?}"
    );
}

#[test]
fn stream_scoped_frame_errors_inside_a_header_block_end_the_connection() {
    let mut c = Client::connected(settings());
    c.headers(1, &post("/"), false).unwrap();
    let block = c.block(&get("/"));
    c.frame(Frame::Headers {
        stream: 3,
        end_stream: true,
        end_headers: false,
        priority: None,
        block: &block,
        padding: None,
    })
    .unwrap();
    let mut bad = Vec::new();
    FrameHeader { len: 4, kind: 0x2, flags: 0, stream: 1 }.write(&mut bad); // PRIORITY of 4 bytes
    bad.extend_from_slice(&[0; 4]);
    assert_eq!(c.feed(&bad).unwrap_err().code, ErrorCode::FRAME_SIZE_ERROR);
}

#[test]
fn graceful_goaway_finishes_live_streams_and_refuses_newer() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    c.conn.go_away(ErrorCode::NO_ERROR);
    assert_eq!(c.take_output(), vec![Out::GoAway { last_stream: 1, code: ErrorCode::NO_ERROR }]);
    assert!(!c.conn.wants_close(), "stream 1 still live");
    c.headers(3, &get("/"), true).unwrap();
    assert_eq!(rst(&c.take_output(), 3), Some(ErrorCode::REFUSED_STREAM));
    c.conn.send_response(1, 200, &[], true).unwrap();
    assert!(c.conn.wants_close());
}

#[test]
fn goaway_from_the_client_is_an_event() {
    let mut c = Client::connected(settings());
    c.frame(Frame::GoAway { last_stream: 0, code: ErrorCode::NO_ERROR, debug: b"bye" }).unwrap();
    assert!(matches!(
        c.events()[..],
        [Event::GoAway { last_stream: 0, code: ErrorCode::NO_ERROR }]
    ));
    assert!(c.conn.wants_close());
}

#[test]
fn oversized_header_list_gets_431() {
    let mut c = Client::connected(ServerSettings { max_header_list_size: 300, ..settings() });
    let mut head = get("/");
    head.push(("x-big".into(), "v".repeat(400)));
    c.headers(1, &head, true).unwrap();
    let out = c.take_output();
    assert!(
        matches!(&out[0], Out::Headers { stream: 1, end_stream: true, fields } if fields[0].1 == "431"),
        "{out:?}"
    );
    assert!(c.events().is_empty());
    c.headers(3, &get("/"), true).unwrap();
    assert_eq!(c.events().len(), 1);
}

#[test]
fn large_response_head_is_split_into_continuation_frames() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    let big = vec![b'a'; 60_000]; // 37 500 bytes Huffman-coded
    c.conn.send_response(1, 200, &[(b"x-big", &big)], true).unwrap();
    let bytes = c.conn.output().to_vec();
    let mut kinds = Vec::new();
    let mut rest = &bytes[..];
    while let Some(h) = FrameHeader::parse(rest) {
        kinds.push((h.kind, h.flags));
        rest = &rest[9 + h.len as usize..];
    }
    assert_eq!(
        kinds,
        vec![(1, 0x1), (9, 0), (9, 0x4)],
        "HEADERS(END_STREAM) + CONTINUATION + CONTINUATION(END_HEADERS)"
    );
}

#[test]
fn response_fields_are_checked() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    assert_eq!(
        c.conn.send_response(1, 200, &[(b"Content-Type", b"x")], true),
        Err(SendError::InvalidField)
    );
    assert_eq!(
        c.conn.send_response(1, 200, &[(b"connection", b"close")], true),
        Err(SendError::InvalidField)
    );
    assert_eq!(
        c.conn.send_response(1, 200, &[(b"x", b"a\nb")], true),
        Err(SendError::InvalidField)
    );
    c.conn.send_response(1, 100, &[], false).unwrap();
    c.conn.send_response(1, 200, &[], true).unwrap();
}

#[test]
fn partial_frames_are_left_for_the_next_call() {
    let mut conn = Connection::new(settings());
    let mut bytes = PREFACE.to_vec();
    Frame::Settings { ack: false, params: &[] }.encode(&mut bytes);
    Frame::Ping { ack: false, payload: [1; 8] }.encode(&mut bytes);
    let now = std::time::Instant::now();
    let n = conn.recv(&bytes[..bytes.len() - 3], now).unwrap();
    assert_eq!(n, 24 + 9, "preface and SETTINGS, not the cut PING");
    assert_eq!(conn.recv(&bytes[n..], now).unwrap(), 17);
}

#[test]
fn recv_bytes_hands_out_data_without_copying() {
    let mut c = Client::connected(settings());
    c.headers(1, &post("/"), false).unwrap();
    c.events();
    let mut wire = Vec::new();
    Frame::Data { stream: 1, end_stream: true, data: b"zero-copy body", padding: None }
        .encode(&mut wire);
    let wire = bytes::Bytes::from(wire);
    assert_eq!(c.conn.recv_bytes(&wire, c.now).unwrap(), wire.len());
    let ev = c.events();
    let [Event::Data { stream: 1, data, end_stream: true }] = &ev[..] else { panic!("{ev:?}") };
    assert_eq!(&data[..], b"zero-copy body");
    assert_eq!(data.as_ptr(), wire[9..].as_ptr(), "a slice of the input, not a copy");
}

#[test]
fn repeated_initial_window_settings_move_windows_once() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    c.conn.send_response(1, 200, &[], false).unwrap();
    c.events();
    let mut params = Vec::new();
    for v in [1000u32, 70_000, 5, 100_000] {
        params.extend_from_slice(&setting::INITIAL_WINDOW_SIZE.to_be_bytes());
        params.extend_from_slice(&v.to_be_bytes());
    }
    c.frame(Frame::Settings { ack: false, params: &params }).unwrap();
    assert_eq!(c.conn.send_capacity(1), 65_535, "the connection window still limits");
    assert_eq!(c.events().len(), 1, "one WindowUpdate event for the stream");
    c.frame(Frame::WindowUpdate { stream: 0, increment: 100_000 }).unwrap();
    assert_eq!(c.conn.send_capacity(1), 100_000);
}

#[test]
fn stream_errors_provoked_by_the_client_count_as_resets() {
    let s = ServerSettings { max_resets_per_window: 5, ..settings() };
    let mut c = Client::connected(s);
    let mut bad = get("/");
    bad.push(("connection".into(), "close".into()));
    let mut result = Ok(());
    for i in 0..6 {
        result = c.headers(1 + 2 * i, &bad, true);
    }
    assert_eq!(result.unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn empty_data_frame_flood_is_cut_off() {
    let mut c = Client::connected(ServerSettings { max_empty_data_frames: 10, ..settings() });
    c.headers(1, &post("/"), false).unwrap();
    for _ in 0..10 {
        c.data(1, b"", false).unwrap();
    }
    c.data(1, b"x", false).unwrap(); // a real frame resets the count
    for _ in 0..10 {
        c.data(1, b"", false).unwrap();
    }
    assert_eq!(c.data(1, b"", false).unwrap_err().code, ErrorCode::ENHANCE_YOUR_CALM);
}

#[test]
fn unreleased_body_of_a_reset_stream_returns_to_the_connection_window() {
    let s = ServerSettings {
        initial_window_size: 65_535,
        connection_window_size: 65_535,
        ..settings()
    };
    let mut c = Client::connected(s);
    c.headers(1, &post("/"), false).unwrap();
    c.data(1, &[1; 16_384], false).unwrap();
    c.data(1, &[1; 16_384], false).unwrap();
    c.data(1, &[1; 7_232], false).unwrap();
    assert_eq!(c.take_output(), vec![], "the application released nothing");
    c.frame(Frame::RstStream { stream: 1, code: ErrorCode::CANCEL }).unwrap();
    assert_eq!(c.take_output(), vec![Out::Window { stream: 0, increment: 40_000 }]);
    // A late release by the application does not count twice.
    c.conn.release_capacity(1, 40_000);
    assert_eq!(c.take_output(), vec![]);
}

#[test]
fn initial_window_values_apply_in_order_so_a_passing_overflow_is_a_connection_error() {
    let mut c = Client::connected(settings());
    c.headers(1, &get("/"), true).unwrap();
    c.conn.send_response(1, 200, &[], false).unwrap();
    c.frame(Frame::WindowUpdate { stream: 1, increment: 1_000 }).unwrap();
    // 65_535 -> 2^31-1 takes the stream's 66_535 past 2^31-1 (§6.9.2), although the next
    // value brings the net change back to zero.
    let mut params = Vec::new();
    for v in [0x7fff_ffffu32, 65_535] {
        params.extend_from_slice(&setting::INITIAL_WINDOW_SIZE.to_be_bytes());
        params.extend_from_slice(&v.to_be_bytes());
    }
    let err = c.frame(Frame::Settings { ack: false, params: &params }).unwrap_err();
    assert_eq!(err.code, ErrorCode::FLOW_CONTROL_ERROR);
    assert_eq!(conn_error(&c.take_output()), Some(ErrorCode::FLOW_CONTROL_ERROR));
}

#[test]
fn settings_the_client_has_not_acked_by_the_deadline_are_overdue() {
    let mut c = Client::connected(settings());
    let t0 = c.now;
    assert!(!c.conn.settings_overdue(t0 + Duration::from_secs(3600)), "no deadline set");
    c.conn.set_settings_deadline(t0 + Duration::from_secs(10));
    assert_eq!(c.conn.settings_deadline(), Some(t0 + Duration::from_secs(10)));
    assert!(!c.conn.settings_overdue(t0 + Duration::from_secs(9)));
    assert!(c.conn.settings_overdue(t0 + Duration::from_secs(10)));
    c.frame(Frame::Settings { ack: true, params: &[] }).unwrap();
    assert!(!c.conn.settings_overdue(t0 + Duration::from_secs(11)));
    assert_eq!(c.conn.settings_deadline(), None);
}
