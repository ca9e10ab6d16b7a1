//! HPACK tests: every example of RFC 7541 Appendix C, decoded and (where the RFC's choices
//! match an encoder policy) encoded, plus limits and malformed input.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

type Fields = Vec<(&'static str, &'static str)>;

fn decode_all(dec: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
    let mut got = Vec::new();
    let out = dec
        .decode(block, |n, v| {
            got.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })
        .expect("decodes");
    assert!(!out.too_large);
    got
}

fn owned(fields: &Fields) -> Vec<(String, String)> {
    fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn table_of(t: &DynamicTable) -> Vec<(String, String)> {
    (0..t.len())
        .map(|i| {
            let (n, v) = t.get(62 + i).expect("entry");
            (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned())
        })
        .collect()
}

#[test]
fn c1_integer_examples() {
    let mut out = Vec::new();
    encode_int(10, 5, 0, &mut out);
    assert_eq!(out, [0x0a]);
    out.clear();
    encode_int(1337, 5, 0, &mut out);
    assert_eq!(out, [0x1f, 0x9a, 0x0a]);
    assert_eq!(decode_int(&out, 5).unwrap(), (1337, 3));
    out.clear();
    encode_int(42, 8, 0, &mut out);
    assert_eq!(out, [0x2a]);
    assert_eq!(decode_int(&[0x2a], 8).unwrap(), (42, 1));
}

#[test]
fn c2_literal_and_indexed_field_examples() {
    let cases: [(&str, (&str, &str), Indexing, usize); 3] = [
        (
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
            ("custom-key", "custom-header"),
            Indexing::Incremental,
            55,
        ),
        ("040c 2f73 616d 706c 652f 7061 7468", (":path", "/sample/path"), Indexing::Without, 0),
        ("1008 7061 7373 776f 7264 0673 6563 7265 74", ("password", "secret"), Indexing::Never, 0),
    ];
    for (bytes, (n, v), indexing, size) in cases {
        let mut dec = Decoder::new(4096, 1 << 16);
        assert_eq!(decode_all(&mut dec, &hex(bytes)), owned(&vec![(n, v)]));
        assert_eq!(dec.table().size(), size);
        // The RFC writes these raw; the encoder Huffman-codes what gets shorter, so compare
        // the representation (first byte) and what the bytes decode to.
        let mut enc = Encoder::new(4096);
        let mut out = Vec::new();
        enc.encode_field_as(n.as_bytes(), v.as_bytes(), indexing, &mut out);
        assert_eq!(out[0], hex(bytes)[0], "{n}");
        let mut again = Decoder::new(4096, 1 << 16);
        assert_eq!(decode_all(&mut again, &out), owned(&vec![(n, v)]));
        assert!(out.len() <= hex(bytes).len());
    }
    let mut dec = Decoder::new(4096, 1 << 16);
    assert_eq!(decode_all(&mut dec, &[0x82]), owned(&vec![(":method", "GET")]));
    assert!(dec.table().is_empty());
}

struct Step {
    block: &'static str,
    fields: Fields,
    table: Fields,
    size: usize,
}

fn run_sequence(table_size: usize, steps: &[Step], encode_too: bool) {
    let mut dec = Decoder::new(table_size, 1 << 16);
    let mut enc = Encoder::new(table_size);
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(decode_all(&mut dec, &hex(step.block)), owned(&step.fields), "step {i}");
        assert_eq!(table_of(dec.table()), owned(&step.table), "table after step {i}");
        assert_eq!(dec.table().size(), step.size, "size after step {i}");
        if encode_too {
            let mut out = Vec::new();
            enc.begin_block(&mut out);
            for (n, v) in &step.fields {
                enc.encode_field_as(n.as_bytes(), v.as_bytes(), Indexing::Incremental, &mut out);
            }
            assert_eq!(out, hex(step.block), "encoding step {i}");
        }
    }
}

fn requests(blocks: [&'static str; 3]) -> Vec<Step> {
    let auth = (":authority", "www.example.com");
    vec![
        Step {
            block: blocks[0],
            fields: vec![(":method", "GET"), (":scheme", "http"), (":path", "/"), auth],
            table: vec![auth],
            size: 57,
        },
        Step {
            block: blocks[1],
            fields: vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                auth,
                ("cache-control", "no-cache"),
            ],
            table: vec![("cache-control", "no-cache"), auth],
            size: 110,
        },
        Step {
            block: blocks[2],
            fields: vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                auth,
                ("custom-key", "custom-value"),
            ],
            table: vec![("custom-key", "custom-value"), ("cache-control", "no-cache"), auth],
            size: 164,
        },
    ]
}

#[test]
fn c3_requests_without_huffman() {
    let steps = requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
    run_sequence(4096, &steps, false);
}

#[test]
fn c4_requests_with_huffman() {
    let steps = requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
    run_sequence(4096, &steps, true);
}

fn responses(blocks: [&'static str; 3]) -> Vec<Step> {
    let cc = ("cache-control", "private");
    let date1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
    let date2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
    let loc = ("location", "https://www.example.com");
    let cookie = ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1");
    vec![
        Step {
            block: blocks[0],
            fields: vec![(":status", "302"), cc, date1, loc],
            table: vec![loc, date1, cc, (":status", "302")],
            size: 222,
        },
        Step {
            block: blocks[1],
            fields: vec![(":status", "307"), cc, date1, loc],
            table: vec![(":status", "307"), loc, date1, cc],
            size: 222,
        },
        Step {
            block: blocks[2],
            fields: vec![(":status", "200"), cc, date2, loc, ("content-encoding", "gzip"), cookie],
            table: vec![cookie, ("content-encoding", "gzip"), date2],
            size: 215,
        },
    ]
}

#[test]
fn c5_responses_without_huffman_and_eviction() {
    let steps = responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ]);
    run_sequence(256, &steps, false);
}

#[test]
fn c6_responses_with_huffman_and_eviction() {
    let steps = responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
    run_sequence(256, &steps, true);
}

#[test]
fn table_size_update_rules() {
    let mut dec = Decoder::new(4096, 1 << 16);
    // 0x3f 0xe1 0x1f = update to 4096: allowed; 4097 is above our SETTINGS.
    assert!(dec.decode(&hex("3fe11f 82"), |_, _| {}).is_ok());
    assert_eq!(
        dec.decode(&hex("3fe21f"), |_, _| {}).unwrap_err().code,
        ErrorCode::COMPRESSION_ERROR
    );
    // An update after a field is an error.
    assert!(dec.decode(&hex("82 20"), |_, _| {}).is_err());
    // Update to 0 empties the table.
    let mut dec = Decoder::new(4096, 1 << 16);
    dec.decode(&hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"), |_, _| {})
        .unwrap();
    assert_eq!(dec.table().len(), 1);
    dec.decode(&hex("20"), |_, _| {}).unwrap();
    assert_eq!(dec.table().len(), 0);
}

#[test]
fn encoder_signals_a_smaller_table_at_the_next_block() {
    let mut enc = Encoder::new(4096);
    enc.set_peer_table_size(0);
    enc.set_peer_table_size(1024);
    let mut out = Vec::new();
    enc.begin_block(&mut out);
    let mut dec = Decoder::new(4096, 1 << 16);
    // Two updates: down to the minimum (0), then up to the final size.
    assert_eq!(out, hex("20 3fe107"));
    dec.decode(&out, |_, _| {}).unwrap();
    assert_eq!(dec.table().max_size(), 1024);
    out.clear();
    enc.begin_block(&mut out);
    assert!(out.is_empty(), "signalled once");
}

#[test]
fn malformed_blocks_are_compression_errors() {
    for bad in ["ff", "be", "80", "41", "4105 6162", "0085 ffffffff ff", "3fffffffff7f"] {
        let mut dec = Decoder::new(4096, 1 << 16);
        let err = dec.decode(&hex(bad), |_, _| {}).unwrap_err();
        assert_eq!(err.code, ErrorCode::COMPRESSION_ERROR, "{bad}");
    }
}

#[test]
fn header_list_over_the_limit_stops_callbacks_but_keeps_the_table() {
    let mut dec = Decoder::new(4096, 60);
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572 82");
    let mut count = 0;
    let out = dec.decode(&block, |_, _| count += 1).unwrap();
    assert!(out.too_large);
    assert_eq!(count, 1, "the field within the limit was handed out, the next not");
    assert_eq!(dec.table().len(), 1, "indexing still happened");
}

#[test]
fn encoder_policy_indexes_repeats_and_never_indexes_secrets() {
    let mut enc = Encoder::new(4096);
    let mut first = Vec::new();
    enc.encode_field(b"server", b"spillway", &mut first);
    let mut second = Vec::new();
    enc.encode_field(b"server", b"spillway", &mut second);
    assert_eq!(second, [0x80 | 62], "second time is one index byte");
    let mut out = Vec::new();
    enc.encode_field(b"set-cookie", b"sid=abc", &mut out);
    assert_eq!(out[0], 0x1f, "never indexed, name from the static table (55 needs two bytes)");
    let mut out = Vec::new();
    enc.encode_field(b"date", b"Sun, 06 Dec 2026 19:40:00 GMT", &mut out);
    assert_eq!(out[0] & 0xf0, 0x00, "literal without indexing");
    assert_eq!(&out[..2], [0x0f, 33 - 15], "name from the static table");
    assert_eq!(out[2], 29, "a short changing value is a raw literal (no Huffman bit)");
    assert_eq!(&out[3..], b"Sun, 06 Dec 2026 19:40:00 GMT");
    let mut out = Vec::new();
    enc.encode_field(b"x-request-id", b"0190f3a2-7c41", &mut out);
    assert_eq!(out[0], 0x00, "literal without indexing, new name");
    assert_eq!(out[1], 12, "the name, never indexed, is a raw literal (no Huffman bit)");
    assert_eq!(&out[2..14], b"x-request-id");
    assert_eq!(&out[14..], b"\x0d0190f3a2-7c41");
    let mut dec = Decoder::new(4096, 1 << 16);
    assert_eq!(decode_all(&mut dec, &out), owned(&vec![("x-request-id", "0190f3a2-7c41")]));
    assert_eq!(enc.table().len(), 1);
}
