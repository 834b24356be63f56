//! The TCP frame decoders must return an error, never panic, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resc_rdma::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_request(data);
    if data.len() >= 4 {
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let _ = wire::decode_request_head(len, &data[4..]);
        let _ = wire::decode_response_head(len, &data[4..]);
    }
});
