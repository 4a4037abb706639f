//! Request decoding: any frame body a client sends is decoded as the
//! broker decodes it (`weir_protocol::decode_request`, every API and
//! version kafka-protocol knows, a superset of those served) without a
//! panic, and without allocating more than the frame can back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    let _ = weir_protocol::decode_request(frame, |key| Some(key.valid_versions()));
});
