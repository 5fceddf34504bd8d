//! Request decoding on arbitrary bodies, into the kitchen-sink message of the gateway's tests
//! (every scalar, enums, repeated and map fields, nested messages, a oneof, well-known types). The
//! first byte picks the body's kind:
//!
//! - even: a JSON body. Decoding never panics, and a message it accepts survives the way back: its
//!   JSON (as the gateway writes responses) decodes again to a message that writes the same JSON;
//! - odd: query parameters (`a.b=1&ids=2`, split on `&` and the first `=`). Decoding never panics.
#![no_main]

use std::borrow::Cow;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use microplane_gateway::transcode::{request_from_json, request_from_params, response_to_json};
use prost_reflect::{DescriptorPool, MessageDescriptor};

static KITCHEN: LazyLock<MessageDescriptor> = LazyLock::new(|| {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let files = protox::compile(["kitchen.proto"], [dir]).expect("the fixture compiles");
    DescriptorPool::from_file_descriptor_set(files)
        .expect("the fixture is consistent")
        .get_message_by_name("kitchen.Kitchen")
        .expect("kitchen.Kitchen")
});

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    let desc = &*KITCHEN;
    if kind % 2 == 0 {
        let Ok(msg) = request_from_json(desc, body) else { return };
        let json = response_to_json(&msg).expect("an accepted message writes as JSON");
        let again = request_from_json(desc, &json)
            .unwrap_or_else(|e| panic!("the gateway cannot read its own JSON {:?}: {e}", String::from_utf8_lossy(&json)));
        assert_eq!(response_to_json(&again).unwrap(), json, "the way back changed the message");
    } else {
        let Ok(query) = std::str::from_utf8(body) else { return };
        let pairs = query.split('&').filter(|p| !p.is_empty()).map(|p| match p.split_once('=') {
            Some((k, v)) => (Cow::Borrowed(k), Cow::Borrowed(v)),
            None => (Cow::Borrowed(p), Cow::Borrowed("")),
        });
        let _ = request_from_params(desc, pairs);
    }
});
