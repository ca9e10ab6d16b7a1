//! Property tests of the frame codec: every encodable frame parses back to itself, and
//! arbitrary bytes never panic the parser.

use proptest::prelude::*;
use spillway_h2::frame::{Frame, Priority, DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE};
use spillway_h2::ErrorCode;

#[derive(Debug, Clone)]
enum Spec {
    Data(u32, bool, Vec<u8>, Option<u8>),
    Headers(u32, bool, bool, Option<(u32, bool, u8)>, Vec<u8>, Option<u8>),
    Priority(u32, u32, bool, u8),
    Rst(u32, u32),
    Settings(bool, Vec<(u16, u32)>),
    Ping(bool, [u8; 8]),
    GoAway(u32, u32, Vec<u8>),
    Window(u32, u32),
    Continuation(u32, bool, Vec<u8>),
}

fn stream() -> impl Strategy<Value = u32> {
    1u32..=0x7fff_ffff
}

fn spec() -> impl Strategy<Value = Spec> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (stream(), any::<bool>(), bytes(), any::<Option<u8>>())
            .prop_map(|(s, e, d, p)| Spec::Data(s, e, d, p)),
        (
            stream(),
            any::<bool>(),
            any::<bool>(),
            any::<Option<(u32, bool, u8)>>(),
            bytes(),
            any::<Option<u8>>()
        )
            .prop_map(|(s, e, h, pr, b, p)| Spec::Headers(
                s,
                e,
                h,
                pr.map(|(d, x, w)| (d & 0x7fff_ffff, x, w)),
                b,
                p
            )),
        (stream(), 0u32..=0x7fff_ffff, any::<bool>(), any::<u8>())
            .prop_map(|(s, d, x, w)| Spec::Priority(s, d, x, w)),
        (stream(), any::<u32>()).prop_map(|(s, c)| Spec::Rst(s, c)),
        (any::<bool>(), proptest::collection::vec((9u16.., 0u32..), 0..8))
            .prop_map(|(ack, p)| Spec::Settings(ack, if ack { Vec::new() } else { p })),
        (any::<bool>(), any::<[u8; 8]>()).prop_map(|(a, p)| Spec::Ping(a, p)),
        (0u32..=0x7fff_ffff, any::<u32>(), bytes()).prop_map(|(l, c, d)| Spec::GoAway(l, c, d)),
        (0u32..=0x7fff_ffff, 1u32..=0x7fff_ffff).prop_map(|(s, i)| Spec::Window(s, i)),
        (stream(), any::<bool>(), bytes()).prop_map(|(s, e, b)| Spec::Continuation(s, e, b)),
    ]
}

proptest! {
    #[test]
    fn encoded_frames_parse_back_to_themselves(spec in spec()) {
        let settings_raw: Vec<u8> = match &spec {
            Spec::Settings(_, p) => p.iter().flat_map(|(i, v)| {
                let mut b = i.to_be_bytes().to_vec();
                b.extend_from_slice(&v.to_be_bytes());
                b
            }).collect(),
            _ => Vec::new(),
        };
        let frame = match &spec {
            Spec::Data(s, e, d, p) => Frame::Data { stream: *s, end_stream: *e, data: d, padding: *p },
            Spec::Headers(s, e, h, pr, b, p) => Frame::Headers {
                stream: *s, end_stream: *e, end_headers: *h,
                priority: pr.map(|(dependency, exclusive, weight)| Priority { dependency, exclusive, weight }),
                block: b, padding: *p,
            },
            Spec::Priority(s, d, x, w) => Frame::Priority { stream: *s, priority: Priority { dependency: *d, exclusive: *x, weight: *w } },
            Spec::Rst(s, c) => Frame::RstStream { stream: *s, code: ErrorCode(*c) },
            Spec::Settings(ack, _) => Frame::Settings { ack: *ack, params: &settings_raw },
            Spec::Ping(a, p) => Frame::Ping { ack: *a, payload: *p },
            Spec::GoAway(l, c, d) => Frame::GoAway { last_stream: *l, code: ErrorCode(*c), debug: d },
            Spec::Window(s, i) => Frame::WindowUpdate { stream: *s, increment: *i },
            Spec::Continuation(s, e, b) => Frame::Continuation { stream: *s, end_headers: *e, block: b },
        };
        let mut out = vec![0xEE; 3]; // frames are appended after what the buffer holds
        frame.encode(&mut out);
        let (parsed, used) = Frame::parse(&out[3..], DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        prop_assert_eq!(used, out.len() - 3);
        prop_assert_eq!(parsed, frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut rest = &bytes[..];
        while let Ok(Some((_, used))) = Frame::parse(rest, MAX_MAX_FRAME_SIZE) {
            prop_assert!(used >= 9 && used <= rest.len());
            rest = &rest[used..];
        }
    }
}
