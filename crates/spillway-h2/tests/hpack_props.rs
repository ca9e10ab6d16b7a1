//! Property tests of HPACK: any header list survives an encode/decode round trip across a
//! sequence of blocks (so the two dynamic tables stay in step), Huffman coding round trips,
//! and arbitrary blocks never panic the decoder.

use proptest::prelude::*;
use spillway_h2::hpack::{huffman, Decoder, Encoder, Indexing};

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"server".to_vec()),
        Just(b"content-type".to_vec()),
        Just(b"set-cookie".to_vec()),
        Just(b"date".to_vec()),
        Just(b":status".to_vec()),
        proptest::collection::vec(b'a'..=b'z', 1..20),
    ]
}

fn field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (name(), proptest::collection::vec(any::<u8>(), 0..80))
}

fn indexing() -> impl Strategy<Value = Option<Indexing>> {
    prop_oneof![
        Just(None),
        Just(Some(Indexing::Incremental)),
        Just(Some(Indexing::Without)),
        Just(Some(Indexing::Never))
    ]
}

proptest! {
    #[test]
    fn header_lists_round_trip_across_blocks(
        blocks in proptest::collection::vec(proptest::collection::vec((field(), indexing()), 0..12), 1..6),
        table_sizes in proptest::collection::vec(prop_oneof![Just(None), (0usize..5000).prop_map(Some)], 6),
    ) {
        let mut enc = Encoder::new(4096);
        let mut dec = Decoder::new(4096, usize::MAX);
        for (i, block) in blocks.iter().enumerate() {
            if let Some(size) = table_sizes[i] {
                enc.set_peer_table_size(size);
            }
            let mut out = Vec::new();
            enc.begin_block(&mut out);
            for ((n, v), how) in block {
                match how {
                    None => enc.encode_field(n, v, &mut out),
                    Some(how) => enc.encode_field_as(n, v, *how, &mut out),
                }
            }
            let mut got = Vec::new();
            dec.decode(&out, |n, v| got.push((n.to_vec(), v.to_vec()))).unwrap();
            let want: Vec<_> = block.iter().map(|(f, _)| f.clone()).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(enc.table().size(), dec.table().size());
            prop_assert!(dec.table().size() <= dec.table().max_size());
        }
    }

    #[test]
    fn huffman_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut enc = Vec::new();
        huffman::encode(&bytes, &mut enc);
        prop_assert_eq!(enc.len(), huffman::encoded_len(&bytes));
        let mut dec = Vec::new();
        huffman::decode(&enc, &mut dec).unwrap();
        prop_assert_eq!(dec, bytes);
    }

    #[test]
    fn arbitrary_blocks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut dec = Decoder::new(4096, 1 << 16);
        let _ = dec.decode(&bytes, |_, _| {});
        let mut out = Vec::new();
        let _ = huffman::decode(&bytes, &mut out);
    }
}
