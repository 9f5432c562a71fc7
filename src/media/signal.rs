//! What clients signal to the server, in the SDK's shape, and the track limit applied to
//! their offers before str0m sees them.

use serde_json::{Value, json};

/// One client `signal` to the server, read from its `data`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ClientSignal {
    Offer(String),
    Answer(String),
    /// `None`: the end-of-candidates marker (an empty or null candidate).
    Candidate(Option<String>),
    /// What the client shows of others' video: (address, width, height) in device
    /// pixels; 0 × 0 is "not shown".
    Views(Vec<(String, u32, u32)>),
}

/// Entries one `views` signal may carry.
pub(super) const MAX_VIEWS: usize = 100;

/// Reads `{description: {type, sdp}}` or `{candidate: {candidate, ...}}` (a bare string
/// candidate is accepted too); anything else is an error naming what is wrong.
pub(super) fn parse(data: &Value) -> Result<ClientSignal, String> {
    if let Some(description) = data.get("description") {
        let kind = description.get("type").and_then(Value::as_str);
        let sdp = description.get("sdp").and_then(Value::as_str);
        return match (kind, sdp) {
            (Some("offer"), Some(sdp)) => Ok(ClientSignal::Offer(sdp.to_string())),
            (Some("answer"), Some(sdp)) => Ok(ClientSignal::Answer(sdp.to_string())),
            (Some(other), Some(_)) => Err(format!(
                "description.type {other:?} is not supported by the server (offer or answer)"
            )),
            _ => Err("description needs a type and an sdp string".into()),
        };
    }
    if let Some(candidate) = data.get("candidate") {
        let text = match candidate {
            Value::Null => None,
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => match o.get("candidate") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(_) => return Err("candidate.candidate must be a string".into()),
            },
            _ => return Err("candidate must be an object".into()),
        };
        let text = text.map(str::trim).filter(|s| !s.is_empty());
        return Ok(ClientSignal::Candidate(
            text.map(|s| s.strip_prefix("a=").unwrap_or(s).to_string()),
        ));
    }
    if let Some(views) = data.get("views") {
        return parse_views(views).map(ClientSignal::Views);
    }
    Err("data needs a description, a candidate or views".into())
}

fn parse_views(views: &Value) -> Result<Vec<(String, u32, u32)>, String> {
    let Some(list) = views.as_array() else {
        return Err("views must be an array".into());
    };
    if list.len() > MAX_VIEWS {
        return Err(format!("views has more than {MAX_VIEWS} entries"));
    }
    list.iter()
        .map(|view| {
            let address = view.get("address").and_then(Value::as_str);
            let size = |key: &str| {
                view.get(key)
                    .and_then(Value::as_u64)
                    .filter(|&n| n <= 100_000)
                    .map(|n| n as u32)
            };
            match (address, size("width"), size("height")) {
                (Some(a), Some(w), Some(h)) => Ok((a.to_string(), w, h)),
                _ => Err("each view needs an address and a width and height (0 to 100000)".into()),
            }
        })
        .collect()
}

/// The server's SDP for the client, in the same shape.
pub(super) fn description(kind: &str, sdp: String) -> Value {
    json!({"description": {"type": kind, "sdp": sdp}})
}

/// The DTLS certificate fingerprint of an SDP (its first `a=fingerprint` line): a browser's
/// peer connection keeps one certificate for its life, so another fingerprint is another
/// peer connection.
pub(super) fn fingerprint(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=fingerprint:"))
        .map(str::trim)
}

/// Tells a publisher which layers of its simulcast video `mid` someone uses.
pub(super) fn layers(mid: &str, active: &[String]) -> Value {
    json!({"layers": {"mid": mid, "active": active}})
}

/// Tells the client that the server dropped its peer connection (`reason` says why): the
/// client starts a new one by offering again.
pub(super) fn closed(reason: &str) -> Value {
    json!({"closed": {"reason": reason}})
}

/// Makes every audio or video m-line past the first `allowed` ones in which the client
/// sends `inactive`, so that str0m answers them `inactive` (refused). Answers the SDP to
/// use and how many m-lines were refused. Rejected m-lines (port 0) do not count.
pub(super) fn limit_tracks(sdp: &str, allowed: usize) -> (String, usize) {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.lines() {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        sections
            .last_mut()
            .expect("one section at least")
            .push(line);
    }
    let (mut sending, mut refused) = (0, 0);
    let mut out: Vec<String> = Vec::new();
    for section in &sections {
        let m = section.first().copied().unwrap_or_default();
        let is_media = m.starts_with("m=audio ") || m.starts_with("m=video ");
        let rejected = m.split(' ').nth(1) == Some("0");
        let direction = section
            .iter()
            .find_map(|l| match *l {
                "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive" => Some(&l[2..]),
                _ => None,
            })
            .unwrap_or("sendrecv");
        let sends = matches!(direction, "sendrecv" | "sendonly");
        if is_media && !rejected && sends {
            sending += 1;
            if sending > allowed {
                refused += 1;
                let mut replaced = false;
                for line in section {
                    if matches!(*line, "a=sendrecv" | "a=sendonly") {
                        out.push("a=inactive".into());
                        replaced = true;
                    } else {
                        out.push(line.to_string());
                    }
                }
                if !replaced {
                    out.push("a=inactive".into());
                }
                continue;
            }
        }
        out.extend(section.iter().map(|l| l.to_string()));
    }
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    (text, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_the_first_fingerprint_line() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256 AB:CD \r\na=fingerprint:sha-1 EF\r\n";
        assert_eq!(fingerprint(sdp), Some("sha-256 AB:CD"));
        assert_eq!(
            fingerprint("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"),
            None
        );
    }

    #[test]
    fn reads_the_sdk_shapes() {
        let offer = json!({"description": {"type": "offer", "sdp": "v=0"}});
        assert_eq!(parse(&offer), Ok(ClientSignal::Offer("v=0".into())));
        let candidate = json!({"candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0"}});
        assert_eq!(
            parse(&candidate),
            Ok(ClientSignal::Candidate(Some(
                "candidate:1 1 udp 1 1.2.3.4 5 typ host".into()
            )))
        );
        let end = json!({"candidate": {"candidate": ""}});
        assert_eq!(parse(&end), Ok(ClientSignal::Candidate(None)));
        assert!(parse(&json!({"description": {"type": "pranswer", "sdp": "x"}})).is_err());
        assert!(parse(&json!({"description": {"type": "offer"}})).is_err());
        assert!(parse(&json!({"sdp": "x"})).is_err());
        assert!(parse(&json!({"candidate": 5})).is_err());
    }

    #[test]
    fn refuses_sending_m_lines_past_the_limit() {
        let sdp = "v=0\r\nm=audio 9 UDP 111\r\na=sendonly\r\nm=video 9 UDP 96\r\na=sendrecv\r\n\
                   m=video 9 UDP 96\r\na=recvonly\r\nm=video 0 UDP 96\r\na=sendonly\r\n\
                   m=video 9 UDP 96\r\na=mid:4\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";
        let (out, refused) = limit_tracks(sdp, 1);
        assert_eq!(refused, 2);
        let sections: Vec<&str> = out.split("m=").collect();
        assert!(sections[1].contains("a=sendonly"));
        assert!(sections[2].contains("a=inactive") && !sections[2].contains("sendrecv"));
        assert!(sections[3].contains("a=recvonly"));
        assert!(sections[4].contains("a=sendonly"), "port 0 is left alone");
        assert!(sections[5].contains("a=inactive"));
        assert!(!sections[6].contains("inactive"));
        assert_eq!(limit_tracks(sdp, 4).1, 0);
    }
}
