//! The SFU media plane (`docs/sfu.md`), end to end: the real binary, real signaling
//! WebSockets, and headless str0m clients sending synthetic Opus and VP8 over real UDP
//! on 127.0.0.1.

#[path = "../api/support.rs"]
mod support;

#[path = "../support/ws.rs"]
#[allow(dead_code)]
mod ws;

mod conference;
mod peer;

use peer::{Peer, Publish};
use reqwest::Method;
use serde_json::json;
use support::{Backend, Options, TestApp};

async fn app() -> TestApp {
    TestApp::spawn(Backend::Memory).await.unwrap()
}

async fn app_with(options: Options) -> TestApp {
    TestApp::spawn_with(Backend::Memory, options).await.unwrap()
}

/// An SFU room's id and token.
async fn sfu_room(app: &TestApp) -> (String, String) {
    let room = app.new_room(json!({"conferenceType": "SFU"})).await;
    (
        room["id"].as_str().unwrap().to_string(),
        room["token"].as_str().unwrap().to_string(),
    )
}

/// Frames this client has received from `from`, audio and video.
fn av_from(peer: &Peer, from: &Peer) -> (u64, u64) {
    peer.snapshot(|s| {
        (
            s.frames_from(&from.address, "audio"),
            s.frames_from(&from.address, "video"),
        )
    })
}

/// Waits until `peer` receives audio, video and a keyframe from `from` (tracks named
/// after the publisher's address), and more of both after that.
async fn receives_from(peer: &Peer, from: &Peer) {
    let what = format!("audio and video from {}", from.address);
    peer.wait_for(&what, |s| {
        s.frames_from(&from.address, "audio") > 0
            && s.frames_from(&from.address, "video") > 0
            && s.keyframes.get(&from.address).is_some_and(|&n| n > 0)
    })
    .await;
    let (a, v) = av_from(peer, from);
    peer.wait_for(&format!("{what}, still flowing"), |s| {
        s.frames_from(&from.address, "audio") > a && s.frames_from(&from.address, "video") > v
    })
    .await;
}

/// Waits until `peer`'s tracks from `gone` are stopped by the server, then proves that
/// nothing more arrives from it while the others' media keeps arriving.
async fn stops_receiving_from(peer: &Peer, gone: &Peer, still: &Peer) {
    peer.wait_for(&format!("the tracks of {} to end", gone.address), |s| {
        s.open_tracks_from(&gone.address) == 0
    })
    .await;
    let before = av_from(peer, gone);
    // Media of the one still there keeps flowing meanwhile: forty more audio frames
    // (as many as 0.8 s of Opus), and not one more frame from the one that is gone.
    let (a, _) = av_from(peer, still);
    peer.wait_for("the others' audio to go on", |s| {
        s.frames_from(&still.address, "audio") >= a + 40
    })
    .await;
    assert_eq!(av_from(peer, gone), before, "media of a gone participant");
}

#[tokio::test]
async fn three_participants_each_receive_the_other_two() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    let c = Peer::join(&app, &token, Publish::AV).await;
    for (peer, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        peer.wait_for("connected", |s| s.connected).await;
        for other in others {
            receives_from(peer, other).await;
        }
        // Nothing of its own comes back.
        assert_eq!(av_from(peer, peer), (0, 0));
        assert!(peer.snapshot(|s| s.errors().is_empty()));
    }
    // The server offered the others' tracks with sendonly m-lines.
    let offers = a.snapshot(|s| {
        s.descriptions
            .iter()
            .filter(|(t, sdp)| t == "offer" && sdp.contains("a=sendonly"))
            .count()
    });
    assert!(offers > 0);
    // Port 0 (the harness's setting) picked a free port, which the log names.
    let logs = app.log_text();
    let line = logs
        .lines()
        .find(|l| l.contains("media plane listening (UDP)"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(!line.contains("127.0.0.1:0 "), "{line}");
}

#[tokio::test]
async fn a_late_joiner_gets_the_earlier_publishers_and_a_keyframe() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&a, &b).await;
    receives_from(&b, &a).await;
    // The publishers sent their first keyframe long ago; the newcomer's subscription
    // makes the server ask them for another.
    let requests = (
        a.snapshot(|s| s.keyframe_requests),
        b.snapshot(|s| s.keyframe_requests),
    );
    let late = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&late, &a).await;
    receives_from(&late, &b).await;
    assert!(a.snapshot(|s| s.keyframe_requests) > requests.0);
    assert!(b.snapshot(|s| s.keyframe_requests) > requests.1);
    // And the earlier ones get the newcomer (the server renegotiated with them).
    receives_from(&a, &late).await;
    receives_from(&b, &late).await;
}

#[tokio::test]
async fn a_resumed_socket_keeps_its_peer_connection() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&b, &a).await;
    receives_from(&a, &b).await;
    let descriptions = b.snapshot(|s| s.descriptions.len());
    b.resume_signaling(&app, &token).await;
    // Media flows on both ways, over the same peer connection: no new negotiation.
    receives_from(&b, &a).await;
    receives_from(&a, &b).await;
    assert_eq!(b.snapshot(|s| s.descriptions.len()), descriptions);
    assert_eq!(b.snapshot(|s| s.open_tracks_from(&a.address)), 2);
    assert_eq!(a.snapshot(|s| s.open_tracks_from(&b.address)), 2);
}

/// Whether the server shows `address`'s seat as waiting for a resume (no socket).
async fn waits_for_resume(app: &TestApp, room: &str, address: &str) -> bool {
    support::json_ok(app.participants(room).await).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["address"] == address && p["connected"] == false)
}

#[tokio::test]
async fn an_offer_lost_while_the_socket_was_gone_is_sent_again_on_resume() {
    let app = app().await;
    let (room, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&b, &a).await;
    receives_from(&a, &b).await;
    // B's socket drops, and the server sees it: B's seat waits for a resume.
    b.drop_signaling().await;
    let noticed = support::eventually(std::time::Duration::from_secs(10), || {
        waits_for_resume(&app, &room, &b.address)
    })
    .await;
    assert!(noticed, "the server never noticed the dropped socket");
    // A new publisher joins meanwhile: the server's offer of its tracks to B is lost.
    let c = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&a, &c).await;
    receives_from(&c, &b).await;
    assert_eq!(b.snapshot(|s| s.open_tracks_from(&c.address)), 0);
    // B resumes: the offer is said again, B answers, and C's media reaches B.
    b.rejoin_signaling(&app, &token).await;
    receives_from(&b, &c).await;
    receives_from(&b, &a).await;
    assert!(
        b.snapshot(|s| s.errors().is_empty()),
        "{:?}",
        b.snapshot(|s| s.messages.clone())
    );
    // Negotiation is not stuck: a later publisher reaches B too.
    let d = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&b, &d).await;
}

#[tokio::test]
async fn a_seat_resumed_without_a_media_connection_here_is_told_to_make_a_new_one() {
    // After a takeover the new owner's media plane has the seats but none of their peer
    // connections (those went with the dead node); a seat that never got its offer through
    // is the same. The resumed client hears `closed` right after `joined`, and offers anew
    // rather than waiting for its ICE to fail.
    let app = app().await;
    let (room, token) = sfu_room(&app).await;
    let (ws, joined) = ws::Client::join(&app, &token, "no media yet").await;
    let address = joined["address"].as_str().unwrap().to_string();
    let resume = joined["resumeToken"].as_str().unwrap().to_string();
    ws.drop_connection();
    let noticed = support::eventually(std::time::Duration::from_secs(10), || {
        waits_for_resume(&app, &room, &address)
    })
    .await;
    assert!(noticed, "the server never noticed the dropped socket");
    let (mut ws, joined) = ws::Client::join_with(
        &app,
        json!({"type": "join", "token": token, "resume": resume}),
    )
    .await;
    assert_eq!(joined["address"], address.as_str());
    let closed = ws.expect("signal").await;
    assert_eq!(closed["from"], "sfu");
    assert_eq!(
        closed["data"],
        json!({"closed": {"reason": "no media connection on this server"}})
    );
    ws.assert_alive().await;
}

#[tokio::test]
async fn a_participant_that_leaves_stops_being_forwarded() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    let c = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&a, &c).await;
    receives_from(&b, &c).await;
    receives_from(&a, &b).await;
    // `c` leaves but its media thread goes on sending: the server must drop it.
    c.leave();
    stops_receiving_from(&a, &c, &b).await;
    stops_receiving_from(&b, &c, &a).await;
}

#[tokio::test]
async fn a_kicked_participant_stops_being_forwarded() {
    let app = app().await;
    let (id, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    let c = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&a, &c).await;
    receives_from(&b, &c).await;
    receives_from(&a, &b).await;
    let res = app
        .request(
            Method::DELETE,
            &format!("/api/realtime/room/{id}/participants/{}", c.address),
        )
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "kick: {}", res.status());
    stops_receiving_from(&a, &c, &b).await;
    stops_receiving_from(&b, &c, &a).await;
}

#[tokio::test]
async fn a_deleted_room_stops_all_media() {
    let app = app().await;
    let (id, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&a, &b).await;
    receives_from(&b, &a).await;
    // A third room member that stays outside the media keeps the proof honest: another
    // room, with its own pair, keeps flowing.
    let (_, other_token) = sfu_room(&app).await;
    let x = Peer::join(&app, &other_token, Publish::AV).await;
    let y = Peer::join(&app, &other_token, Publish::AV).await;
    receives_from(&x, &y).await;

    let res = app.delete_room(&id).await;
    assert!(res.status().is_success());
    a.wait_for("the room's close", |s| s.closed.is_some()).await;
    b.wait_for("the room's close", |s| s.closed.is_some()).await;
    // The other room is unaffected, and nothing flows in the deleted one: what was in
    // flight has landed once `x` got forty more audio frames; after forty more, nothing
    // more from the deleted room has arrived.
    for _ in 0..2 {
        let before = (av_from(&a, &b), av_from(&b, &a));
        let (n, _) = av_from(&x, &y);
        x.wait_for("the other room's audio", |s| {
            s.frames_from(&y.address, "audio") >= n + 40
        })
        .await;
        if (av_from(&a, &b), av_from(&b, &a)) == before {
            receives_from(&y, &x).await;
            return;
        }
    }
    panic!("media still flows in a deleted room");
}

#[tokio::test]
async fn tracks_past_the_limit_are_refused_in_the_answer() {
    let app = app_with(Options::default().env("CONVENE_RTC_MAX_TRACKS_PER_PARTICIPANT", 2)).await;
    let (_, token) = sfu_room(&app).await;
    let many = Publish {
        extra_video: 2,
        ..Publish::AV
    };
    let a = Peer::join(&app, &token, many).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&b, &a).await;
    a.wait_for("the answer", |s| {
        s.descriptions.iter().any(|(t, _)| t == "answer")
    })
    .await;
    let answer = a.snapshot(|s| {
        s.descriptions
            .iter()
            .find(|(t, _)| t == "answer")
            .unwrap()
            .1
            .clone()
    });
    assert_eq!(answer.matches("a=inactive").count(), 2, "{answer}");
    assert_eq!(answer.matches("a=recvonly").count(), 2, "{answer}");
    // Only the two accepted tracks reach the other participant.
    let tracks = b.snapshot(|s| s.open_tracks_from(&a.address));
    assert_eq!(tracks, 2);
}

#[tokio::test]
async fn lost_packets_are_nacked_and_media_goes_on() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let lossy = Publish {
        drop_every: 7,
        ..Publish::AV
    };
    let b = Peer::join(&app, &token, lossy).await;
    receives_from(&b, &a).await;
    // The subscriber's NACKs reach the server, which resends from its buffer; counted in
    // the metrics (str0m reports them once a second).
    let deadline = std::time::Instant::now() + peer::WAIT;
    loop {
        let metrics = metrics(&app).await;
        let nacks: u64 = metric(&metrics, "convene_sfu_nacks_total");
        if nacks > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no NACK counted:\n{metrics}"
        );
        let (_, v) = av_from(&b, &a);
        b.wait_for("more video", |s| s.frames_from(&a.address, "video") > v + 5)
            .await;
    }
    receives_from(&b, &a).await;
    let metrics = metrics(&app).await;
    assert!(metric(&metrics, "convene_sfu_forwarded_frames_total") > 0);
    assert!(metric(&metrics, "convene_sfu_forwarded_bytes_total") > 0);
    assert!(metric(&metrics, "convene_sfu_keyframe_requests_total") > 0);
    assert_eq!(metric(&metrics, "convene_sfu_peers_connected"), 2);
    assert_eq!(metric(&metrics, "convene_sfu_tracks"), 4);
}

async fn metrics(app: &TestApp) -> String {
    app.request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn bad_signals_to_the_sfu_get_an_error_and_harm_nobody() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    receives_from(&a, &b).await;
    let hostile = [
        json!({"description": {"type": "offer", "sdp": "this is not SDP"}}),
        json!({"description": {"type": "answer", "sdp": "v=0"}}),
        json!({"description": {"type": "pranswer", "sdp": "v=0"}}),
        json!({"candidate": {"candidate": "candidate:garbage"}}),
        json!({"nothing": true}),
        json!("a string"),
    ];
    for (n, data) in hostile.iter().enumerate() {
        b.signal_sfu(data.clone());
        b.wait_for("an error", |s| s.errors().len() > n).await;
    }
    for error in b.snapshot(|s| s.errors().into_iter().cloned().collect::<Vec<_>>()) {
        assert_eq!(error["code"], "REALTIME-00020", "{error}");
        assert_eq!(error["id"], "SFU_SIGNAL_REJECTED", "{error}");
    }
    // A flood of well-formed candidates (more than the server keeps) is absorbed without
    // an error.
    for port in 0..60 {
        b.signal_sfu(json!({"candidate": {"candidate": format!("candidate:1 1 udp 2122260223 10.9.9.9 {} typ host", 20000 + port), "sdpMid": "0"}}));
    }
    // Strangers' datagrams on the media port are dropped.
    let sdp = a.snapshot(|s| s.descriptions[0].1.clone());
    let media = peer::candidate_addr(&sdp).expect("a server candidate in the answer");
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        stranger
            .send_to(
                &[
                    0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                ],
                media,
            )
            .unwrap();
        stranger.send_to(b"\x80garbage", media).unwrap();
    }
    // Media still flows both ways, and the flood made no error: the next one is the
    // answer to one more bad signal.
    receives_from(&a, &b).await;
    receives_from(&b, &a).await;
    b.signal_sfu(json!({"description": {"type": "offer", "sdp": "bad"}}));
    b.wait_for("one more error", |s| s.errors().len() > hostile.len())
        .await;
    assert_eq!(b.snapshot(|s| s.errors().len()), hostile.len() + 1);
    assert!(a.snapshot(|s| s.errors().is_empty()));
}

#[tokio::test]
async fn a_mesh_room_keeps_answering_sfu_unavailable() {
    let app = app().await;
    let room = app.new_room(json!({})).await;
    let (mut ws, _) = ws::Client::join(&app, room["token"].as_str().unwrap(), "m").await;
    ws.send(json!({"type": "signal", "to": "sfu", "data": {"description": {"type": "offer", "sdp": "v=0"}}}))
        .await;
    ws.expect_error("REALTIME-00016", Some("SFU_UNAVAILABLE"))
        .await;
}

#[tokio::test]
async fn an_upgraded_room_negotiates_with_the_sfu() {
    let app = app().await;
    let room = app
        .new_room(json!({"conferenceType": "MESH", "autoUpgradeParticipantCount": 2}))
        .await;
    let token = room["token"].as_str().unwrap();
    let a = Peer::join_quiet(&app, token, Publish::AV).await;
    let b = Peer::join_quiet(&app, token, Publish::AV).await;
    for peer in [&a, &b] {
        peer.wait_for("the upgrade", |s| {
            s.messages
                .iter()
                .any(|m| m["type"] == "conferenceTypeChanged")
        })
        .await;
        peer.offer();
    }
    receives_from(&a, &b).await;
    receives_from(&b, &a).await;
}

#[tokio::test]
async fn a_peer_that_never_completes_ice_is_dropped_from_media_but_keeps_its_seat() {
    let app = app_with(Options::default().env("CONVENE_RTC_ICE_TIMEOUT_MS", 300)).await;
    let (id, token) = sfu_room(&app).await;
    let (mut ws, joined) = ws::Client::join(&app, &token, "silent").await;
    let address = joined["address"].as_str().unwrap().to_string();
    // An offer from a client that never sends a single packet.
    let offer = silent_offer();
    ws.send(json!({"type": "signal", "to": "sfu", "data": {"description": {"type": "offer", "sdp": offer}}}))
        .await;
    let answer = ws.expect("signal").await;
    assert_eq!(answer["from"], "sfu");
    assert_eq!(answer["data"]["description"]["type"], "answer");
    // The client is told its peer connection is gone (so it may start a new one) ...
    let closed = ws.expect("signal").await;
    assert_eq!(closed["from"], "sfu");
    assert_eq!(
        closed["data"],
        json!({"closed": {"reason": "ICE did not complete in time"}})
    );
    // ... and operators see it in the metrics; the seat stays.
    let deadline = std::time::Instant::now() + peer::WAIT;
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(20));
    loop {
        poll.tick().await;
        let metrics = metrics(&app).await;
        if metric(&metrics, "convene_sfu_ice_failures_total") == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
    }
    ws.assert_alive().await;
    let list = support::json_ok(app.participants(&id).await).await;
    assert!(list.to_string().contains(&address), "{list}");
}

#[tokio::test]
async fn an_offer_of_a_new_peer_connection_replaces_the_old_one() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let (mut ws, _) = ws::Client::join(&app, &token, "replacing").await;
    let mut fingerprints = Vec::new();
    // Two offers from two peer connections (two certificates), the second while the
    // server still holds the first: each is answered by a peer connection of its own
    // (another certificate of the server's), not taken as a renegotiation of the first.
    for _ in 0..2 {
        let offer = silent_offer();
        ws.send(json!({"type": "signal", "to": "sfu", "data": {"description": {"type": "offer", "sdp": offer}}}))
            .await;
        let (kind, sdp) = next_sfu_description(&mut ws).await;
        assert_eq!(kind, "answer");
        let line = sdp
            .lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .unwrap();
        fingerprints.push(line.to_string());
    }
    assert_ne!(fingerprints[0], fingerprints[1]);
    ws.assert_alive().await;
}

/// An offer made by a str0m client that is then dropped without sending anything.
fn silent_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _) = change.apply().unwrap();
    offer.to_sdp_string()
}

/// The next `signal` from `sfu` on a plain socket, skipping room news; answers its
/// description's type and SDP.
async fn next_sfu_description(ws: &mut ws::Client) -> (String, String) {
    loop {
        let m = ws.recv().await;
        if m["type"] == "signal" && m["from"] == "sfu" {
            let d = &m["data"]["description"];
            return (
                d["type"].as_str().unwrap().to_string(),
                d["sdp"].as_str().unwrap().to_string(),
            );
        }
        assert_ne!(m["type"], "error", "{m}");
    }
}

#[tokio::test]
async fn on_glare_the_server_ignores_the_client_offer_and_the_client_offers_again() {
    use str0m::change::{SdpAnswer, SdpOffer};
    use str0m::media::{Direction, MediaKind};
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    // A client that only negotiates (its media never flows; ICE timing is irrelevant).
    let (mut ws, _) = ws::Client::join(&app, &token, "glare").await;
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    rtc.add_local_candidate(str0m::Candidate::host("127.0.0.1:9".parse().unwrap(), "udp").unwrap());
    let offer_with = |rtc: &mut str0m::Rtc, kind| {
        let mut change = rtc.sdp_api();
        change.add_media(kind, Direction::SendOnly, None, None, None);
        change.apply().unwrap()
    };
    let signal = |kind: &str, sdp: String| json!({"type": "signal", "to": "sfu", "data": {"description": {"type": kind, "sdp": sdp}}});
    let (offer, pending) = offer_with(&mut rtc, MediaKind::Audio);
    ws.send(signal("offer", offer.to_sdp_string())).await;
    let (kind, sdp) = next_sfu_description(&mut ws).await;
    assert_eq!(kind, "answer");
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&sdp).unwrap())
        .unwrap();

    // Another participant publishes: the server offers its tracks.
    let _publisher = Peer::join(&app, &token, Publish::AV).await;
    let (kind, server_offer) = next_sfu_description(&mut ws).await;
    assert_eq!(kind, "offer");
    assert!(server_offer.contains("a=sendonly"), "{server_offer}");

    // The client offers at the same time (glare): the server ignores it, no answer and no
    // error; `ping` is answered by the very next message.
    let (glare, _rolled_back) = offer_with(&mut rtc, MediaKind::Video);
    ws.send(signal("offer", glare.to_sdp_string())).await;
    ws.assert_alive().await;

    // The client rolls back (drops its pending offer), answers the server's offer, then
    // offers again: now the server answers.
    let answer = rtc
        .sdp_api()
        .accept_offer(SdpOffer::from_sdp_string(&server_offer).unwrap())
        .unwrap();
    ws.send(signal("answer", answer.to_sdp_string())).await;
    let (again, _pending) = offer_with(&mut rtc, MediaKind::Video);
    ws.send(signal("offer", again.to_sdp_string())).await;
    let (kind, _) = next_sfu_description(&mut ws).await;
    assert_eq!(kind, "answer");
}

#[test]
fn a_media_port_in_use_stops_start_up_naming_the_setting() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let exited = support::run_to_exit(
        Options::default().env("CONVENE_RTC_UDP_PORT", port),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("CONVENE_RTC_UDP_PORT"),
        "{}",
        exited.stderr
    );
}

#[test]
fn an_unreachable_advertise_address_is_refused() {
    let exited = support::run_to_exit(
        Options::default().env("CONVENE_RTC_ADVERTISE_IP", "0.0.0.0"),
        std::time::Duration::from_secs(30),
    );
    assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("CONVENE_RTC_ADVERTISE_IP"),
        "{}",
        exited.stderr
    );
}

/// Follows `participantMediaUpdated` events on an admin stream, remembering the latest
/// `media` of each participant (events about others go by while it waits for one).
struct MediaWatch {
    room: String,
    latest: std::collections::HashMap<String, serde_json::Value>,
}

impl MediaWatch {
    fn new(room: &str) -> Self {
        Self {
            room: room.to_string(),
            latest: Default::default(),
        }
    }

    /// Waits until the latest `media` of `address` satisfies `done`; every media event on
    /// the way is checked for its shape, other events are skipped.
    async fn until(
        &mut self,
        s: &mut ws::Client,
        address: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        loop {
            if let Some(media) = self.latest.get(address)
                && done(media)
            {
                return media.clone();
            }
            let e = s.recv().await;
            if e["type"] != "participantMediaUpdated" {
                continue;
            }
            assert_eq!(e["roomId"], self.room.as_str(), "{e}");
            assert!(e["seq"].is_u64(), "{e}");
            assert!(e["media"]["connected"].is_boolean(), "{e}");
            for t in e["media"]["tracks"].as_array().unwrap() {
                assert!(t["mid"].is_string(), "{e}");
                assert!(t["kind"] == "audio" || t["kind"] == "video", "{e}");
            }
            let address = e["address"].as_str().unwrap().to_string();
            self.latest.insert(address, e["media"].clone());
        }
    }
}

/// The track kinds in a `media` object, sorted.
fn kinds(media: &serde_json::Value) -> Vec<String> {
    let mut kinds: Vec<String> = media["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

/// The participant `address` in the REST list of room `id`.
async fn listed(app: &TestApp, id: &str, address: &str) -> Option<serde_json::Value> {
    let body = support::json_ok(app.participants(id).await).await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == address)
        .cloned()
}

/// The participant `address` in a fresh admin snapshot's room `id`.
async fn in_snapshot(app: &TestApp, id: &str, address: &str) -> Option<serde_json::Value> {
    let mut s = ws::Client::stream(app, None).await;
    let snapshot = s.expect("snapshot").await;
    let room = snapshot["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("room {id} not in {snapshot}"));
    room["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == address)
        .cloned()
}

#[tokio::test]
async fn operators_see_each_participants_media_connection_and_tracks() {
    let app = app().await;
    let (id, token) = sfu_room(&app).await;
    let mut s = ws::Client::stream(&app, None).await;
    s.expect("snapshot").await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let audio_only = Publish {
        video: false,
        ..Publish::AV
    };
    let b = Peer::join(&app, &token, audio_only).await;
    receives_from(&b, &a).await;

    // Live: A's connection comes up and its two tracks are listed.
    let mut watch = MediaWatch::new(&id);
    let media = watch
        .until(&mut s, &a.address, |m| {
            m["connected"] == true && m["tracks"].as_array().unwrap().len() == 2
        })
        .await;
    assert_eq!(kinds(&media), ["audio", "video"]);

    // The REST list and a new subscriber's snapshot show the same.
    let listed_a = listed(&app, &id, &a.address).await.unwrap();
    assert_eq!(listed_a["media"], media);
    assert_eq!(listed_a["connected"], true);
    assert_eq!(
        in_snapshot(&app, &id, &a.address).await.unwrap()["media"],
        media
    );
    // B publishes audio only.
    let media_b = watch
        .until(&mut s, &b.address, |m| {
            m["connected"] == true && !m["tracks"].as_array().unwrap().is_empty()
        })
        .await;
    assert_eq!(kinds(&media_b), ["audio"]);

    // A leaves (its media thread goes on sending): it is gone everywhere, and no media
    // event about it follows, up to a marker event created after the leave.
    a.leave();
    loop {
        let e = s.recv().await;
        assert!(
            !(e["type"] == "participantMediaUpdated" && e["address"] == a.address.as_str()),
            "{e}"
        );
        if e["type"] == "participantLeft" && e["address"] == a.address.as_str() {
            break;
        }
    }
    b.wait_for("the tracks of A to end", |s| {
        s.open_tracks_from(&a.address) == 0
    })
    .await;
    let marker = app.new_room(json!({"name": "marker"})).await;
    loop {
        let e = s.recv().await;
        assert_ne!(e["address"], a.address.as_str(), "stale: {e}");
        if e["type"] == "roomCreated" && e["room"]["id"] == marker["id"] {
            break;
        }
    }
    assert_eq!(listed(&app, &id, &a.address).await, None);
    assert_eq!(in_snapshot(&app, &id, &a.address).await, None);
    assert!(in_snapshot(&app, &id, &b.address).await.unwrap()["media"]["connected"] == true);
}

#[tokio::test]
async fn a_mesh_room_shows_no_media_state() {
    let app = app().await;
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let (_ws, joined) = ws::Client::join(&app, room["token"].as_str().unwrap(), "M").await;
    let address = joined["address"].as_str().unwrap();
    let listed = listed(&app, id, address).await.unwrap();
    assert!(listed.get("media").is_none(), "{listed}");
    let snap = in_snapshot(&app, id, address).await.unwrap();
    assert!(snap.get("media").is_none(), "{snap}");
}

/// A free UDP port on 127.0.0.1.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn media_of_a_room_runs_on_its_owner_for_participants_bridged_from_other_nodes() {
    // Three nodes on one private Redis (`docs/cluster.md`): the room is owned by A, the
    // two participants' sockets reach B and C, which bridge them to A.
    let Some(redis) = support::RedisServer::start() else {
        return;
    };
    let ports = [free_udp_port(), free_udp_port(), free_udp_port()];
    let node = |id: &str, port: u16| {
        TestApp::spawn_on(
            &redis.url(),
            Options::default()
                .env("CONVENE_CLUSTER", 1)
                .env("CONVENE_NODE_ID", id)
                .env("CONVENE_RTC_UDP_PORT", port),
        )
    };
    let (a, b, c) = (
        node("a", ports[0]),
        node("b", ports[1]),
        node("c", ports[2]),
    );
    let (_, token) = sfu_room(&a).await;
    let p = Peer::join(&b, &token, Publish::AV).await;
    let q = Peer::join(&c, &token, Publish::AV).await;
    for (peer, other) in [(&p, &q), (&q, &p)] {
        peer.wait_for("connected", |s| s.connected).await;
        receives_from(peer, other).await;
        assert!(peer.snapshot(|s| s.errors().is_empty()));
        // The server's side is A's media plane: its candidates carry A's port.
        let sdp = peer.snapshot(|s| s.descriptions[0].1.clone());
        let media = peer::candidate_addr(&sdp).expect("a server candidate");
        assert_eq!(media.port(), ports[0], "{sdp}");
    }
}
