//! The signaling decoder (`protocol::parse`) on any text a client can send.
//! Beyond "no panic": an accepted frame keeps its invariants, a relayed `data` goes out
//! byte for byte, and a refusal is an error of the table in the signaling range or BASE.
#![no_main]

use convene::fuzzing::{ClientMessage, parse_signaling, relayed};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // A WebSocket text frame is UTF-8 by definition; the socket refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_signaling(text) {
        Ok(message) => {
            // Only JSON objects are accepted.
            let value: Value = serde_json::from_str(text).expect("accepted text is JSON");
            assert!(value.is_object(), "accepted a non-object: {text}");
            match message {
                ClientMessage::Join(join) => {
                    assert!(join.name.as_ref().is_none_or(|n| n.chars().count() <= 512));
                    assert!(join.participant_info.as_ref().is_none_or(Value::is_object));
                }
                ClientMessage::Signal { data, .. } | ClientMessage::Message { data, .. } => {
                    let out = relayed("message", "PA-1", &data);
                    let back: Value = serde_json::from_str(&out).expect("relayed is JSON");
                    let sent: Value = serde_json::from_str(data.get()).expect("data is JSON");
                    assert_eq!(back["data"], sent);
                    assert!(out.contains(data.get()), "data not relayed byte for byte");
                }
                ClientMessage::MediaState { .. } | ClientMessage::Leave | ClientMessage::Ping => {}
            }
        }
        Err(e) => {
            assert!(!e.description.is_empty());
            let code = e.code.code();
            assert!(
                code.starts_with("BASE-") || code.starts_with("REALTIME-"),
                "{code}"
            );
            assert_eq!(e.code.status().as_u16(), 400, "{code}");
        }
    }
    // The decoder is a function of its input.
    assert_eq!(
        format!("{:?}", parse_signaling(text)),
        format!("{:?}", parse_signaling(text))
    );
});
