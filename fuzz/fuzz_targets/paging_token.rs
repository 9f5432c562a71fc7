//! Paging tokens (`PageTokens`): a token it made always decodes back to its cursor, a token
//! altered in any way never decodes to anything else, and arbitrary text decodes only to what
//! re-encodes to exactly that text (that is: only tokens it made decode at all).
#![no_main]

use convene::fuzzing::{Cursor, PageTokens};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tokens = PageTokens::new(b"fuzzing secret");

    // 1. Arbitrary text as a token.
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(cursor) = tokens.decode(text)
    {
        assert_eq!(
            tokens.encode(&cursor),
            text,
            "decoded a token it did not make"
        );
    }

    // 2. A cursor from the input: 8 bytes of time, one byte of mutation, the rest the id.
    if data.len() < 9 {
        return;
    }
    let creation_time = u64::from_le_bytes(data[..8].try_into().unwrap());
    let mutation = data[8];
    let id = String::from_utf8_lossy(&data[9..]).into_owned();
    let cursor = Cursor { creation_time, id };
    let token = tokens.encode(&cursor);
    assert_eq!(tokens.decode(&token).as_ref(), Some(&cursor), "round trip");
    assert!(
        PageTokens::new(b"another secret").decode(&token).is_none(),
        "another key's token decoded"
    );

    // 3. The same token altered: it must decode to nothing, or (if the alteration happened to
    //    leave the same text) to the same cursor.
    let mut altered = token.clone().into_bytes();
    let at = usize::from(mutation) % altered.len();
    match mutation % 3 {
        0 => altered[at] = if altered[at] == b'A' { b'B' } else { b'A' },
        1 => altered.truncate(at),
        _ => altered.insert(at, b'A'),
    }
    let altered = String::from_utf8(altered).unwrap();
    match tokens.decode(&altered) {
        None => {}
        Some(other) => {
            assert_eq!(altered, token, "an altered token decoded to {other:?}");
            assert_eq!(other, cursor);
        }
    }
});
