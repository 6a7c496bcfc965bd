//! The signer protocol's decoders, as a compromised frontend would feed them: the frame
//! header (request and answer bounds), the frame reader, and every request and answer
//! type. Whatever decodes must encode again and decode to the same message.
#![no_main]

use hsm_est_proto::codec::{read_frame, FrameHeader, HEADER_LEN};
use hsm_est_proto::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&data[..HEADER_LEN]);
        if let Ok(header) = FrameHeader::decode(&h) {
            assert!(header.body_len <= hsm_est_proto::MAX_FRAME_BODY);
        }
        let _ = FrameHeader::decode_answer(&h);
    }
    let _ = read_frame(&mut &data[..]);
    let Some((&msg_type, body)) = data.split_first() else {
        return;
    };
    if let Ok(req) = Request::decode(msg_type, body) {
        let again = req.encode().expect("a decoded request encodes");
        assert_eq!(Request::decode(msg_type, &again).expect("and decodes"), req);
    }
    if let Ok(resp) = Response::decode(msg_type, body) {
        let again = resp.encode().expect("a decoded answer encodes");
        assert_eq!(
            Response::decode(msg_type, &again).expect("and decodes"),
            resp
        );
    }
});
