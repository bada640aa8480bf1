//! Fuzzes the envelope and body decoders with the demo service's types: client and server
//! messages, and a re-encode of whatever decodes, which must decode to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::message::{decode_client, decode_server, encode_client, ClientMessage};

fuzz_target!(|data: &[u8]| {
    let _ = decode_server::<Response>(data);
    if let Ok(ClientMessage::Call { id, deadline, request: Ok(request) }) = decode_client::<Request>(data) {
        let mut again = Vec::new();
        let msg = ClientMessage::Call { id, deadline, request: request.clone() };
        encode_client(&mut again, &msg, u64::MAX).expect("a decoded message encodes");
        match decode_client::<Request>(&again) {
            Ok(ClientMessage::Call { id: id2, request: Ok(request2), .. }) => {
                assert_eq!(id, id2);
                assert_eq!(request, request2);
            }
            other => panic!("re-encoded call does not decode: {other:?}"),
        }
    }
});
