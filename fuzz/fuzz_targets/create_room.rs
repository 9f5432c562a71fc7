//! The create-room body check (media type, JSON object, field rules) on any bytes.
//! Beyond "no panic": an accepted body honours every rule of the published table, and a
//! refusal is a 400 or 415 of the error table.
#![no_main]

use convene::fuzzing::parse_create_room;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const MESH_LIMIT: u32 = 7;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the Content-Type, so every branch of the media-type rule is fuzzed.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = match pick % 4 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("Application/JSON; charset=utf-8"),
        _ => Some("text/plain"),
    };
    match parse_create_room(content_type, body, MESH_LIMIT) {
        Ok(room) => {
            assert!(content_type != Some("text/plain"));
            assert!(room.name.as_ref().is_none_or(|n| n.chars().count() <= 512));
            assert!(
                room.description
                    .as_ref()
                    .is_none_or(|d| d.chars().count() <= 4096)
            );
            assert!(
                room.auto_upgrade_participant_count
                    .is_none_or(|n| (2..=MESH_LIMIT).contains(&n))
            );
            if !body.is_empty() {
                let value: Value = serde_json::from_slice(body).expect("accepted body is JSON");
                let fields = value.as_object().expect("accepted body is an object");
                if let Some(Value::String(name)) = fields.get("name") {
                    assert_eq!(room.name.as_deref(), Some(name.as_str()));
                }
            }
        }
        Err(e) => {
            assert!(!e.description.is_empty());
            let status = e.code.status().as_u16();
            assert!(status == 400 || status == 415, "{status} {}", e.code.code());
            if content_type == Some("text/plain") {
                assert_eq!(status, 415);
            }
        }
    }
});
