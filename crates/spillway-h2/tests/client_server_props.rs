//! Property test: [`ClientConnection`] against the crate's own server [`Connection`], wired
//! together in memory. For any window sizes, stream limit, body sizes, transport chunking and
//! release pacing, every exchange completes — request bodies and request trailers reach the
//! server intact, response bodies and trailers reach the client intact — with no protocol
//! error on either side and no stall (progress within a bounded number of steps), and the
//! client never has more streams open than the server allows.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use spillway_h2::{
    ClientConnection, ClientEvent, ClientSettings, Connection, Event, RequestError, RequestLine,
    ServerSettings,
};
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Byte `i` of a body of stream-index `k`: a pattern that catches reordering and loss.
fn pattern(k: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ k) as u8).collect()
}

#[derive(Debug, Clone)]
struct Case {
    client_window: u32,
    client_conn_window: u32,
    server_window: u32,
    server_conn_window: u32,
    max_streams: u32,
    /// (request body length, response body length) per exchange.
    exchanges: Vec<(usize, usize)>,
    /// Most bytes moved per direction per step.
    chunk: usize,
    /// The client releases response bytes only every this many steps.
    release_every: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1_000u32..300_000, 65_535u32..400_000, 1_000u32..300_000, 65_535u32..400_000),
        1u32..5,
        proptest::collection::vec((0usize..120_000, 0usize..120_000), 1..8),
        1usize..40_000,
        1usize..4,
    )
        .prop_map(|((cw, ccw, sw, scw), max_streams, exchanges, chunk, release_every)| Case {
            client_window: cw,
            client_conn_window: ccw,
            server_window: sw,
            server_conn_window: scw,
            max_streams,
            exchanges,
            chunk,
            release_every,
        })
}

/// The server side: collects request bodies, answers once a request ended.
#[derive(Default)]
struct ServerStream {
    exchange: usize,
    body: Vec<u8>,
    trailer: Option<String>,
    ended: bool,
    response: Vec<u8>,
    sent: usize,
    head_sent: bool,
    done: bool,
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let now = Instant::now();
    let mut client = ClientConnection::new(ClientSettings {
        initial_window_size: case.client_window,
        connection_window_size: case.client_conn_window,
        ..ClientSettings::default()
    });
    let mut server = Connection::new(ServerSettings {
        initial_window_size: case.server_window,
        connection_window_size: case.server_conn_window,
        max_concurrent_streams: case.max_streams,
        ..ServerSettings::default()
    });
    let n = case.exchanges.len();
    let requests: Vec<Vec<u8>> =
        case.exchanges.iter().enumerate().map(|(k, &(req, _))| pattern(k, req)).collect();
    let responses: Vec<Vec<u8>> =
        case.exchanges.iter().enumerate().map(|(k, &(_, resp))| pattern(k + 100, resp)).collect();
    let mut waiting: VecDeque<usize> = (0..n).collect();
    // Client side: stream -> (exchange, request bytes sent, request ended).
    let mut sending: HashMap<u32, (usize, usize, bool)> = HashMap::new();
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); n];
    let mut got_trailer: Vec<Option<String>> = vec![None; n];
    let mut unreleased: Vec<(u32, usize)> = Vec::new();
    let mut stream_of: HashMap<u32, usize> = HashMap::new();
    let mut finished = 0;
    let mut server_streams: HashMap<u32, ServerStream> = HashMap::new();
    // Bytes written and not yet delivered, and delivered but not yet consumed, each way.
    let (mut to_server, mut to_client): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    let (mut server_in, mut client_in): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
    let mut idle_steps = 0;
    let mut step = 0usize;
    // Liveness bound: the transport moves `chunk` bytes each way per step, so every byte of
    // both bodies (plus frame and window-update overhead, well under 2x) must get through
    // within this many steps. A fixed 100 000 was too few for ~98 KB at 1 byte per step.
    let volume: usize = requests.iter().chain(&responses).map(|b| b.len() + 1024).sum();
    let max_steps = 2 * volume / case.chunk + 10_000;
    while finished < n {
        step += 1;
        let mut progress = false;
        // Client opens and sends.
        while let Some(&k) = waiting.front() {
            if !client.settings_received() {
                break;
            }
            let line =
                RequestLine { method: b"POST", scheme: b"http", authority: b"up", path: b"/" };
            let end = requests[k].is_empty() && k % 2 == 1;
            match client.send_request(line, [(&b"x-k"[..], k.to_string().as_bytes())], end) {
                Ok(id) => {
                    waiting.pop_front();
                    sending.insert(id, (k, 0, end));
                    stream_of.insert(id, k);
                    progress = true;
                }
                Err(RequestError::NoCapacity) => break,
                Err(e) => return Err(TestCaseError::fail(format!("send_request: {e}"))),
            }
        }
        prop_assert!(client.active_streams() <= case.max_streams as usize);
        for (&id, (k, sent, ended)) in sending.iter_mut() {
            if *ended {
                continue;
            }
            let body = &requests[*k];
            // Odd exchanges end with trailers, even ones with END_STREAM on the last DATA.
            let with_trailers = *k % 2 == 1;
            if let Ok(m) = client.send_data(id, &body[*sent..], !with_trailers) {
                if m > 0 {
                    progress = true;
                }
                *sent += m;
                if *sent == body.len() {
                    if with_trailers {
                        client
                            .send_trailers(id, [(&b"x-sum"[..], k.to_string().as_bytes())])
                            .unwrap();
                    }
                    *ended = true;
                    progress = true;
                }
            }
        }
        if step.is_multiple_of(case.release_every) {
            for (id, m) in unreleased.drain(..) {
                client.release_capacity(id, m);
            }
        }
        // Transport: at most `chunk` bytes each way per step.
        to_server.extend_from_slice(client.output());
        let out = client.output().len();
        client.consumed(out);
        let take = to_server.len().min(case.chunk);
        server_in.extend(to_server.drain(..take));
        if !server_in.is_empty() {
            let used = server
                .recv(&server_in, now)
                .map_err(|e| TestCaseError::fail(format!("server recv: {e}")))?;
            server_in.drain(..used);
            progress |= used > 0;
        }
        // Server application.
        while let Some(ev) = server.poll_event() {
            match ev {
                Event::Request { stream, head, end_stream } => {
                    let k: usize = std::str::from_utf8(head.fields().get(b"x-k").unwrap())
                        .unwrap()
                        .parse()
                        .unwrap();
                    server_streams.insert(
                        stream,
                        ServerStream {
                            exchange: k,
                            ended: end_stream,
                            response: responses[k].clone(),
                            ..ServerStream::default()
                        },
                    );
                }
                Event::Data { stream, data, end_stream } => {
                    server.release_capacity(stream, data.len());
                    let s = server_streams.get_mut(&stream).unwrap();
                    s.body.extend_from_slice(&data);
                    s.ended |= end_stream;
                }
                Event::Trailers { stream, trailers } => {
                    let s = server_streams.get_mut(&stream).unwrap();
                    s.trailer =
                        trailers.get(b"x-sum").map(|v| String::from_utf8(v.to_vec()).unwrap());
                    s.ended = true;
                }
                Event::Reset { stream, code } => {
                    return Err(TestCaseError::fail(format!("server saw reset {stream} {code}")))
                }
                Event::WindowUpdate { .. } | Event::GoAway { .. } => {}
            }
        }
        for (&id, s) in server_streams.iter_mut() {
            if !s.ended || s.done {
                continue;
            }
            if !s.head_sent {
                prop_assert_eq!(&s.body, &requests[s.exchange], "request body of {}", s.exchange);
                if s.exchange % 2 == 1 && !requests[s.exchange].is_empty() {
                    prop_assert_eq!(s.trailer.clone(), Some(s.exchange.to_string()));
                }
                server.send_response(id, 200, &[], false).unwrap();
                s.head_sent = true;
                progress = true;
            }
            let m = server.send_data(id, &s.response[s.sent..], false).unwrap();
            s.sent += m;
            progress |= m > 0;
            if s.sent == s.response.len() {
                server.send_trailers(id, &[(b"grpc-status", b"0")]).unwrap();
                s.done = true;
            }
        }
        to_client.extend_from_slice(server.output());
        let out = server.output().len();
        server.consumed(out);
        let take = to_client.len().min(case.chunk);
        client_in.extend(to_client.drain(..take));
        if !client_in.is_empty() {
            let used = client
                .recv(&client_in, now)
                .map_err(|e| TestCaseError::fail(format!("client recv: {e}")))?;
            client_in.drain(..used);
            progress |= used > 0;
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Response { head, .. } => prop_assert_eq!(head.status, 200),
                ClientEvent::Data { stream, data, .. } => {
                    got[stream_of[&stream]].extend_from_slice(&data);
                    unreleased.push((stream, data.len()));
                }
                ClientEvent::Trailers { stream, trailers } => {
                    let k = stream_of[&stream];
                    got_trailer[k] = trailers
                        .get(b"grpc-status")
                        .map(|v| String::from_utf8(v.to_vec()).unwrap());
                    finished += 1;
                }
                ClientEvent::WindowUpdate { .. } => {}
                other => return Err(TestCaseError::fail(format!("client saw {other:?}"))),
            }
        }
        if progress || !to_server.is_empty() || !to_client.is_empty() {
            idle_steps = 0;
        } else {
            idle_steps += 1;
            prop_assert!(idle_steps < 2 * case.release_every + 4, "stalled at step {}", step);
        }
        prop_assert!(step < max_steps, "no end");
    }
    for k in 0..n {
        prop_assert_eq!(&got[k], &responses[k], "response body of {}", k);
        prop_assert_eq!(got_trailer[k].as_deref(), Some("0"));
    }
    prop_assert_eq!(client.active_streams(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn every_exchange_completes_intact_within_the_windows(c in case()) {
        run(c)?;
    }
}
