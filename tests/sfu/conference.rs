//! The SFU at conference scale (docs/sfu.md, "Simulcast and layers", "Active speakers"):
//! simulcast layers chosen per subscriber from what it shows, switched on keyframes into
//! one continuous stream, layers nobody uses paused at the publisher, and the room's
//! active speakers from the audio levels.

use crate::peer::{Frame, Peer, Publish};
use crate::{app, sfu_room};

const SIMULCAST: Publish = Publish {
    simulcast: true,
    ..Publish::AV
};

/// Waits until `peer` receives video of `layer` from `from`, and five frames more of it.
async fn receives_layer(peer: &Peer, from: &Peer, layer: char) {
    let count = |s: &crate::peer::Seen| {
        s.video
            .get(&from.address)
            .map_or(0, |f| f.iter().filter(|f| f.layer == layer).count())
    };
    peer.wait_for(&format!("layer {layer} from {}", from.address), |s| {
        count(s) > 0 && last_layer(s, from) == Some(layer)
    })
    .await;
    let n = peer.snapshot(count);
    peer.wait_for(&format!("more of layer {layer}"), |s| count(s) >= n + 5)
        .await;
}

/// The layer of the last video frame received from `from`.
fn last_layer(s: &crate::peer::Seen, from: &Peer) -> Option<char> {
    s.video
        .get(&from.address)
        .and_then(|f| f.last())
        .map(|f| f.layer)
}

/// The stream a subscriber saw is one continuous stream: a layer changes only at a
/// keyframe, RTP time always moves forward by less than a second, no packet is missing.
fn assert_continuous(frames: &[Frame]) {
    assert!(frames[0].keyframe, "the stream starts with a keyframe");
    for pair in frames.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.layer != b.layer {
            assert!(
                b.keyframe,
                "a switch {} → {} on a delta frame",
                a.layer, b.layer
            );
        }
        assert!(
            b.time > a.time && b.time - a.time < 90_000,
            "RTP time jumped from {} to {} at {} → {}",
            a.time,
            b.time,
            a.layer,
            b.layer
        );
        assert!(
            b.contiguous,
            "a packet missing before a frame of {}",
            b.layer
        );
    }
}

#[tokio::test]
async fn each_subscriber_gets_the_layer_its_view_asks_for_switched_on_keyframes() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let publisher = Peer::join(&app, &token, SIMULCAST).await;
    let big = Peer::join(&app, &token, Publish::AV).await;
    let small = Peer::join(&app, &token, Publish::AV).await;

    // Nobody said how big it shows the publisher: the best layer.
    receives_layer(&big, &publisher, 'f').await;
    receives_layer(&small, &publisher, 'f').await;
    // One subscriber shrinks it to a thumbnail: it moves to the lowest layer, the other
    // stays on the best.
    small.views(&[(&publisher.address, 100, 56)]);
    receives_layer(&small, &publisher, 'q').await;
    // A middle size: the middle layer (320 × 180 covers 400 × 225 within a quarter).
    small.views(&[(&publisher.address, 400, 225)]);
    receives_layer(&small, &publisher, 'h').await;
    receives_layer(&big, &publisher, 'f').await;

    // The publisher is told to send only what is used: h and f, not q.
    publisher
        .wait_for("q paused", |s| {
            s.layers_told.last().is_some_and(|l| *l == ["h", "f"])
        })
        .await;

    for peer in [&big, &small] {
        peer.snapshot(|s| assert_continuous(&s.video[&publisher.address]));
    }
    assert!(
        small.snapshot(|s| s.video[&publisher.address].iter().any(|f| f.layer == 'q')),
        "the thumbnail got the lowest layer on the way"
    );
}

#[tokio::test]
async fn a_hidden_participant_is_not_forwarded_and_its_audio_goes_on() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let publisher = Peer::join(&app, &token, SIMULCAST).await;
    let viewer = Peer::join(&app, &token, Publish::AV).await;
    receives_layer(&viewer, &publisher, 'f').await;

    viewer.views(&[(&publisher.address, 0, 0)]);
    // Nobody receives the publisher's video any more: every layer is paused at the
    // source ...
    publisher
        .wait_for("every layer paused", |s| {
            s.layers_told.last().is_some_and(|l| l.is_empty())
        })
        .await;
    // ... and not one more video frame reaches the viewer, while audio goes on.
    let video = viewer.snapshot(|s| s.frames_from(&publisher.address, "video"));
    let audio = viewer.snapshot(|s| s.frames_from(&publisher.address, "audio"));
    viewer
        .wait_for("forty more audio frames", |s| {
            s.frames_from(&publisher.address, "audio") >= audio + 40
        })
        .await;
    assert_eq!(
        viewer.snapshot(|s| s.frames_from(&publisher.address, "video")),
        video,
        "video of a hidden participant"
    );

    // Shown again: the layer resumes at the publisher and video comes back from a keyframe.
    viewer.views(&[(&publisher.address, 640, 360)]);
    publisher
        .wait_for("f resumed", |s| {
            s.layers_told.last().is_some_and(|l| *l == ["f"])
        })
        .await;
    receives_layer(&viewer, &publisher, 'f').await;
    viewer.snapshot(|s| assert_continuous(&s.video[&publisher.address]));
}

#[tokio::test]
async fn bad_views_are_refused_and_change_nothing() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let publisher = Peer::join(&app, &token, SIMULCAST).await;
    let viewer = Peer::join(&app, &token, Publish::AV).await;
    receives_layer(&viewer, &publisher, 'f').await;
    for (n, data) in [
        serde_json::json!({"views": "big"}),
        serde_json::json!({"views": [{"address": publisher.address, "width": -1, "height": 2}]}),
        serde_json::json!({"views": [{"width": 1, "height": 2}]}),
        serde_json::json!({"views": vec![serde_json::json!({"address": "PA-x", "width": 1, "height": 1}); 101]}),
    ]
    .into_iter()
    .enumerate()
    {
        viewer.signal_sfu(data);
        viewer
            .wait_for("an error", |s| s.errors().len() > n)
            .await;
    }
    for error in viewer.snapshot(|s| s.errors().into_iter().cloned().collect::<Vec<_>>()) {
        assert_eq!(error["id"], "SFU_SIGNAL_REJECTED", "{error}");
    }
    receives_layer(&viewer, &publisher, 'f').await;
}

/// Every `activeSpeakers` list `peer` was told, in order.
fn speakers_told(s: &crate::peer::Seen) -> Vec<serde_json::Value> {
    s.messages
        .iter()
        .filter(|m| m["type"] == "activeSpeakers")
        .map(|m| m["speakers"].clone())
        .collect()
}

async fn told(peer: &Peer, what: &str, speakers: &[&Peer]) {
    let list: Vec<&str> = speakers.iter().map(|p| p.address.as_str()).collect();
    let list = serde_json::json!(list);
    peer.wait_for(what, |s| speakers_told(s).last() == Some(&list))
        .await;
}

#[tokio::test]
async fn active_speakers_follow_the_audio_levels() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let a = Peer::join(&app, &token, Publish::AV).await;
    let b = Peer::join(&app, &token, Publish::AV).await;
    let c = Peer::join(&app, &token, Publish::AV).await;
    for peer in [&a, &b, &c] {
        peer.speak(-127);
    }
    a.speak(-20);
    for peer in [&a, &b, &c] {
        told(peer, "a speaks", &[&a]).await;
    }
    // b speaks louder too: both, loudest first.
    b.speak(-5);
    told(&c, "b and a speak", &[&b, &a]).await;
    // a stops: after its silence, only b.
    a.speak(-127);
    told(&c, "only b speaks", &[&b]).await;
    // Nobody: an empty list.
    b.speak(-127);
    told(&c, "nobody speaks", &[]).await;
    // No flicker: each list c was told differs from the one before, four in all.
    let lists = c.snapshot(speakers_told);
    assert!(lists.windows(2).all(|w| w[0] != w[1]), "{lists:?}");
    assert_eq!(lists.len(), 4, "{lists:?}");
}

#[tokio::test]
async fn a_thin_downlink_gets_a_lower_layer_and_a_wide_one_keeps_the_best() {
    let app = app().await;
    let (_, token) = sfu_room(&app).await;
    let publisher = Peer::join(&app, &token, SIMULCAST).await;
    let wide = Peer::join(&app, &token, Publish::AV).await;
    // 600 kbit/s: the best layer (about 960) does not fit, the middle one (320) does.
    let thin = Peer::join(
        &app,
        &token,
        Publish {
            downlink_kbps: 600,
            ..Publish::AV
        },
    )
    .await;
    receives_layer(&wide, &publisher, 'f').await;
    receives_layer(&thin, &publisher, 'h').await;
    // It stays there (no flapping back to f on a link that cannot carry it) ...
    let frames = thin.snapshot(|s| s.video[&publisher.address].len());
    thin.wait_for("forty more frames", |s| {
        s.video[&publisher.address].len() >= frames + 40
    })
    .await;
    thin.snapshot(|s| {
        let recent = &s.video[&publisher.address][frames..];
        assert!(
            recent.iter().all(|f| f.layer != 'f'),
            "{:?}",
            recent.iter().map(|f| f.layer).collect::<String>()
        );
    });
    // ... while the wide one keeps the best, and both streams stay continuous.
    receives_layer(&wide, &publisher, 'f').await;
    wide.snapshot(|s| assert_continuous(&s.video[&publisher.address]));
}
