//! The media plane's pure rules for conferences: which simulcast layer a subscriber gets
//! ([`choose`]), an outgoing stream whose RTP time stays continuous across layer switches
//! ([`TsMap`]), the size of a VP8 keyframe ([`vp8_size`]) and who is speaking ([`Speech`],
//! [`speakers`]). No sockets and no clock of their own: unit-tested as plain functions.

use std::time::{Duration, Instant};
use str0m::media::{MediaTime, Rid};

/// What a subscriber shows of a publisher's video (its `views` signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum View {
    /// Never said: shown at a size the server does not know (the best layer is sent).
    #[default]
    Unknown,
    /// Not shown anywhere: nothing is forwarded.
    Hidden,
    /// Shown at most this big, in device pixels.
    Size(u32, u32),
}

impl View {
    pub(super) fn from_size(width: u32, height: u32) -> Self {
        if width == 0 || height == 0 {
            View::Hidden
        } else {
            View::Size(width, height)
        }
    }
}

/// A layer of a published video as the selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LayerInfo {
    /// `None` for a track without simulcast (its one layer).
    pub rid: Option<Rid>,
    /// Size of its last keyframe; (0, 0) while unknown.
    pub size: (u16, u16),
    /// A packet of it has arrived (a browser sends only the layers its camera is big
    /// enough for).
    pub seen: bool,
    /// What it carries, in bits per second (0 while unknown).
    pub bitrate: u64,
}

/// The layer to forward for `view`, from `layers` (lowest first): `None` forwards nothing.
/// The smallest layer that covers the shown size (within a quarter) wins; the best one
/// when the size is unknown or no layer covers it. Layers never seen are skipped unless
/// none was seen yet (then the lowest is asked for: its keyframe starts the stream).
pub(super) fn choose(layers: &[LayerInfo], view: View) -> Option<Option<Rid>> {
    if view == View::Hidden || layers.is_empty() {
        return None;
    }
    let seen: Vec<&LayerInfo> = layers.iter().filter(|l| l.seen).collect();
    let Some(best) = seen.last() else {
        return Some(layers[0].rid);
    };
    let View::Size(width, height) = view else {
        return Some(best.rid);
    };
    let covers = |l: &&&LayerInfo| {
        let (w, h) = (u32::from(l.size.0), u32::from(l.size.1));
        w > 0 && w * 4 >= width * 3 && h * 4 >= height * 3
    };
    Some(seen.iter().find(covers).unwrap_or(best).rid)
}

/// One subscriber's video tracks, as [`allocate`] sees them.
#[derive(Debug, Clone)]
pub(super) struct Wish {
    pub layers: Vec<LayerInfo>,
    pub view: View,
    /// The layer its view asks for ([`choose`]).
    pub wanted: Option<Option<Rid>>,
    /// The layer it has now (its target), for hysteresis.
    pub now: Option<Option<Rid>>,
}

/// Fits the layers a subscriber's views ask for into its downlink estimate: the biggest
/// videos on screen first (an unknown size counts as biggest), each one the best layer up
/// to the wanted one that fits what is left, the lowest when none does (videos are thinned,
/// never stopped, by bandwidth). Going up a layer needs 15 % headroom, so that an estimate
/// hovering at a layer's rate does not make it flap. Answers each track's layer, in order.
pub(super) fn allocate(wishes: &[Wish], budget: u64) -> Vec<Option<Option<Rid>>> {
    let area = |v: View| match v {
        View::Unknown => u64::MAX,
        View::Hidden => 0,
        View::Size(w, h) => u64::from(w) * u64::from(h),
    };
    let mut order: Vec<usize> = (0..wishes.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(area(wishes[k].view)));
    let mut left = budget;
    let mut result = vec![None; wishes.len()];
    for k in order {
        let wish = &wishes[k];
        let Some(wanted) = wish.wanted else {
            continue;
        };
        let candidates: Vec<&LayerInfo> = wish
            .layers
            .iter()
            .filter(|l| l.seen)
            .take_while(|l| l.rid != wanted)
            .chain(wish.layers.iter().filter(|l| l.rid == wanted))
            .collect();
        let current = candidates.iter().position(|l| Some(l.rid) == wish.now);
        let fits = |(i, l): &(usize, &&LayerInfo)| {
            let cost = if current.is_some_and(|c| *i > c) {
                l.bitrate + l.bitrate * 15 / 100
            } else {
                l.bitrate
            };
            cost <= left
        };
        let chosen = candidates
            .iter()
            .enumerate()
            .rev()
            .find(fits)
            .or_else(|| candidates.iter().enumerate().next())
            .map(|(_, l)| *l);
        if let Some(layer) = chosen {
            left = left.saturating_sub(layer.bitrate);
            result[k] = Some(layer.rid);
        } else {
            result[k] = Some(wanted);
        }
    }
    result
}

/// A subscriber's downlink estimate, from what the server sent it and the loss its
/// receiver reports tell (RTCP), in one-second windows: no limit until loss shows; above
/// 10 % loss the estimate falls to what got through (the sent rate less half the loss);
/// below 2 % it grows by 8 % a second, at most to 1.5 × what is sent, and past that only
/// after ten clear seconds (a probe: if the link is still thin, loss brings it back down).
#[derive(Debug, Default)]
pub(super) struct Downlink {
    estimate: Option<u64>,
    window: Option<(Instant, u64, f32)>,
    clear_since: Option<Instant>,
}

/// Above this, an estimate is no limit at all.
const UNLIMITED: u64 = 50_000_000;

impl Downlink {
    /// The estimate in bits per second, `None`: no limit known.
    pub(super) fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// `bytes` more were sent on one stream (since its last sample), and the subscriber's
    /// receiver report for that stream said `loss` (a fraction), at `now`. The loss of a
    /// window is the streams' losses weighted by what each carried: one packet lost of a
    /// thumbnail's 15 a second is not 6 % loss of the whole downlink.
    pub(super) fn sample(&mut self, bytes: u64, loss: Option<f32>, now: Instant) {
        let (start, sent, lost) = self.window.get_or_insert((now, 0, 0.0));
        *sent += bytes;
        *lost += bytes as f32 * loss.unwrap_or(0.0).clamp(0.0, 1.0);
        let elapsed = now.saturating_duration_since(*start);
        if elapsed < Duration::from_secs(1) {
            return;
        }
        let rate = (*sent as f64 * 8.0 / elapsed.as_secs_f64()) as u64;
        let loss = if *sent == 0 {
            0.0
        } else {
            f64::from(*lost) / *sent as f64
        };
        self.window = Some((now, 0, 0.0));
        if loss > 0.10 {
            self.estimate = Some((rate as f64 * (1.0 - 0.5 * loss)).round() as u64);
            self.clear_since = None;
        } else if loss < 0.02
            && let Some(estimate) = self.estimate
        {
            let clear = *self.clear_since.get_or_insert(now);
            let grown = estimate + estimate * 8 / 100;
            let probing = now.saturating_duration_since(clear) >= Duration::from_secs(10);
            let next = if probing {
                grown
            } else {
                grown.min((rate + rate / 2).max(estimate))
            };
            self.estimate = (next < UNLIMITED).then_some(next);
        }
    }
}

/// Maps the RTP time of the layers forwarded on one outgoing stream onto one timeline:
/// each layer has its own RTP time base, so at a switch the new layer is rebased to go on
/// from the last time sent plus the time that passed. Wallclocks never go back.
#[derive(Debug, Default)]
pub(super) struct TsMap {
    offset: u32,
    last: Option<(u32, Instant)>,
}

impl TsMap {
    /// The outgoing RTP time and wallclock of a frame of RTP time `time` that arrived at
    /// `arrival`; `rebase` when it is the first frame of a layer just switched to.
    pub(super) fn map(
        &mut self,
        time: MediaTime,
        arrival: Instant,
        rebase: bool,
    ) -> (MediaTime, Instant) {
        let source = time.numer() as u32;
        let hz = time.frequency().get() as u64;
        if rebase && let Some((last_ts, last_wall)) = self.last {
            let gap = arrival.saturating_duration_since(last_wall);
            let ticks = (gap.as_micros() as u64 * hz / 1_000_000).max(1);
            self.offset = last_ts.wrapping_add(ticks as u32).wrapping_sub(source);
        }
        let ts = source.wrapping_add(self.offset);
        let wall = self.last.map_or(arrival, |(_, w)| w.max(arrival));
        self.last = Some((ts, wall));
        (MediaTime::new(u64::from(ts), time.frequency()), wall)
    }
}

/// Width and height of a VP8 keyframe (RFC 6386 §9.1), `None` for another frame.
pub(super) fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    let keyframe = frame.first().is_some_and(|b| b & 1 == 0);
    if !keyframe || frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

/// Louder than this (audio level, −dBov) is speech.
const SPEECH_LEVEL: i8 = -50;
/// Speech this long makes a speaker ...
const SPEAKING_AFTER: Duration = Duration::from_millis(300);
/// ... and silence this long ends it. Gaps shorter than this do not break speech.
const SILENT_AFTER: Duration = Duration::from_secs(1);
/// At most this many active speakers are told.
pub(super) const MAX_SPEAKERS: usize = 3;

/// One publisher's speech, from the audio levels of its packets (RFC 6464).
#[derive(Debug, Default)]
pub(super) struct Speech {
    since: Option<Instant>,
    last_loud: Option<Instant>,
    /// Smoothed level of the loud frames, for ranking speakers.
    loudness: f32,
}

impl Speech {
    /// A frame with audio level `level` (0 loudest, −127 silence) arrived at `now`.
    pub(super) fn level(&mut self, level: i8, now: Instant) {
        if self.silent(now) {
            self.since = None;
        }
        if level > SPEECH_LEVEL {
            self.since.get_or_insert(now);
            self.last_loud = Some(now);
            let loud = f32::from(level) - f32::from(SPEECH_LEVEL);
            self.loudness = self.loudness * 0.9 + loud * 0.1;
        }
    }

    fn silent(&self, now: Instant) -> bool {
        self.last_loud
            .is_none_or(|t| now.saturating_duration_since(t) >= SILENT_AFTER)
    }

    /// Speaking at `now`: speech for long enough, not silent for too long.
    pub(super) fn speaking(&self, now: Instant) -> bool {
        !self.silent(now)
            && self
                .since
                .is_some_and(|t| now.saturating_duration_since(t) >= SPEAKING_AFTER)
    }
}

/// The active speakers among `members` (address, speech), loudest first, at most
/// [`MAX_SPEAKERS`].
pub(super) fn speakers<'a>(
    members: impl Iterator<Item = (&'a str, &'a Speech)>,
    now: Instant,
) -> Vec<String> {
    let mut speaking: Vec<(&str, f32)> = members
        .filter(|(_, s)| s.speaking(now))
        .map(|(a, s)| (a, s.loudness))
        .collect();
    speaking.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    speaking
        .into_iter()
        .take(MAX_SPEAKERS)
        .map(|(a, _)| a.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::media::Frequency;

    fn layer(rid: &str, size: (u16, u16), seen: bool) -> LayerInfo {
        LayerInfo {
            rid: Some(Rid::from(rid)),
            size,
            seen,
            bitrate: u64::from(size.0) * 1000,
        }
    }

    /// 80, 160 and 320 kbit/s.
    fn three() -> Vec<LayerInfo> {
        vec![
            layer("q", (80, 45), true),
            layer("h", (160, 90), true),
            layer("f", (320, 180), true),
        ]
    }

    fn wish(view: View, now: &str) -> Wish {
        let layers = three();
        Wish {
            wanted: choose(&layers, view),
            layers,
            view,
            now: Some(Some(Rid::from(now))),
        }
    }

    fn rids(list: &[Option<Option<Rid>>]) -> Vec<String> {
        list.iter()
            .map(|r| match r {
                Some(Some(rid)) => rid.to_string(),
                Some(None) => "-".into(),
                None => "off".into(),
            })
            .collect()
    }

    #[test]
    fn a_downlink_estimate_thins_the_smallest_videos_first() {
        let big = wish(View::Size(640, 360), "f");
        let small = wish(View::Size(200, 112), "h");
        let hidden = wish(View::Hidden, "f");
        let all = [small.clone(), big.clone(), hidden.clone()];
        // Room for everything wanted (320 + 160).
        assert_eq!(rids(&allocate(&all, 1_000_000)), ["h", "f", "off"]);
        // 400 kbit/s: the big one keeps f, the small one drops to q.
        assert_eq!(rids(&allocate(&all, 400_000)), ["q", "f", "off"]);
        // 250: the big one drops to h, the small one to q.
        assert_eq!(rids(&allocate(&all, 250_000)), ["q", "h", "off"]);
        // Nothing fits: the lowest layers, never nothing.
        assert_eq!(rids(&allocate(&all, 10_000)), ["q", "q", "off"]);
    }

    #[test]
    fn the_downlink_estimate_falls_with_loss_and_grows_back_slowly() {
        let start = Instant::now();
        let s = |n: u64| start + Duration::from_secs(n);
        let mut link = Downlink::default();
        // 1 Mbit/s (125 kB a second) without loss: no limit.
        link.sample(0, None, s(0));
        link.sample(125_000, Some(0.0), s(1));
        assert_eq!(link.estimate(), None);
        // 40 % lost: 1 Mbit/s less 20 %.
        link.sample(125_000, Some(0.4), s(2));
        assert_eq!(link.estimate(), Some(800_000));
        // 5 %: held.
        link.sample(125_000, Some(0.05), s(3));
        assert_eq!(link.estimate(), Some(800_000));
        // Clear at 400 kbit/s sent: it would grow 8 % a second, but not past
        // 1.5 × 400 = 600, so it stays ...
        link.sample(50_000, Some(0.0), s(4));
        assert_eq!(link.estimate(), Some(800_000));
        for n in 5..14 {
            link.sample(50_000, None, s(n));
        }
        assert_eq!(link.estimate(), Some(800_000));
        // ... until ten clear seconds: then it grows past it (a probe).
        link.sample(50_000, None, s(14));
        assert_eq!(link.estimate(), Some(864_000));
        // Clear at 600 kbit/s sent, from 500: up to 1.5 × 600 = 900, 8 % at a time.
        link.sample(125_000, Some(0.5), s(15));
        assert_eq!(link.estimate(), Some(750_000));
        link.sample(75_000, None, s(16));
        assert_eq!(link.estimate(), Some(810_000));
        link.sample(75_000, None, s(17));
        assert_eq!(link.estimate(), Some(874_800));
        link.sample(75_000, None, s(18));
        assert_eq!(link.estimate(), Some(900_000));
    }

    #[test]
    fn the_downlink_loss_is_weighted_by_what_each_stream_carried() {
        let start = Instant::now();
        let s = |n: u64| start + Duration::from_millis(n);
        let mut link = Downlink::default();
        link.sample(0, None, s(0));
        // One packet of a thumbnail's 16 lost (6 %), none of a big video's: the downlink
        // lost 0.25 %, no reason to cut.
        link.sample(120_000, Some(0.0), s(500));
        link.sample(5_000, Some(0.0625), s(1000));
        assert_eq!(link.estimate(), None);
        // The big video losing 40 % is a thin link.
        link.sample(120_000, Some(0.4), s(1500));
        link.sample(5_000, Some(0.0), s(2000));
        assert!(link.estimate().is_some_and(|e| e < 1_000_000));
    }

    #[test]
    fn going_up_a_layer_needs_headroom_going_down_does_not() {
        // At h, f (320) needs 368 to come back; at f, 320 keeps it.
        let at_h = wish(View::Unknown, "h");
        assert_eq!(rids(&allocate(std::slice::from_ref(&at_h), 340_000)), ["h"]);
        assert_eq!(rids(&allocate(std::slice::from_ref(&at_h), 370_000)), ["f"]);
        let at_f = wish(View::Unknown, "f");
        assert_eq!(rids(&allocate(std::slice::from_ref(&at_f), 330_000)), ["f"]);
        assert_eq!(rids(&allocate(std::slice::from_ref(&at_f), 300_000)), ["h"]);
    }

    #[test]
    fn the_smallest_layer_that_covers_the_shown_size_is_chosen() {
        let layers = three();
        let rid = |r: &str| Some(Some(Rid::from(r)));
        assert_eq!(choose(&layers, View::Size(40, 22)), rid("q"));
        assert_eq!(choose(&layers, View::Size(100, 56)), rid("q"));
        assert_eq!(choose(&layers, View::Size(120, 68)), rid("h"));
        // Within a quarter: 160 covers 200 × 3/4 = 150.
        assert_eq!(choose(&layers, View::Size(200, 112)), rid("h"));
        assert_eq!(choose(&layers, View::Size(300, 170)), rid("f"));
        // Bigger than any layer, or of unknown size: the best one.
        assert_eq!(choose(&layers, View::Size(1920, 1080)), rid("f"));
        assert_eq!(choose(&layers, View::Unknown), rid("f"));
        assert_eq!(choose(&layers, View::Hidden), None);
        assert_eq!(View::from_size(0, 0), View::Hidden);
    }

    #[test]
    fn layers_never_seen_are_skipped_and_unknown_sizes_do_not_cover() {
        let mut layers = three();
        layers[2].seen = false;
        assert_eq!(
            choose(&layers, View::Unknown),
            Some(Some(Rid::from("h"))),
            "the best layer that is sent"
        );
        layers[0].size = (0, 0);
        assert_eq!(
            choose(&layers, View::Size(40, 22)),
            Some(Some(Rid::from("h")))
        );
        // Nothing seen yet: the lowest layer is asked for.
        let none: Vec<LayerInfo> = three()
            .into_iter()
            .map(|l| LayerInfo { seen: false, ..l })
            .collect();
        assert_eq!(
            choose(&none, View::Size(300, 170)),
            Some(Some(Rid::from("q")))
        );
        // A track without simulcast has its one layer.
        let plain = [LayerInfo {
            rid: None,
            size: (0, 0),
            seen: true,
            bitrate: 0,
        }];
        assert_eq!(choose(&plain, View::Size(40, 22)), Some(None));
        assert_eq!(choose(&plain, View::Hidden), None);
    }

    fn t(ticks: u64) -> MediaTime {
        MediaTime::new(ticks, Frequency::NINETY_KHZ)
    }

    #[test]
    fn rtp_time_goes_on_across_a_switch_between_layers_of_other_time_bases() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut map = TsMap::default();
        // Layer A from 1_000_000: passed through.
        assert_eq!(map.map(t(1_000_000), ms(0), true).0.numer(), 1_000_000);
        assert_eq!(map.map(t(1_009_000), ms(100), false).0.numer(), 1_009_000);
        // Layer B, whose base is elsewhere (near the 32-bit wrap), 100 ms later: it
        // continues 9000 ticks (100 ms at 90 kHz) after the last time sent ...
        let (time, wall) = map.map(t(4_294_960_000), ms(200), true);
        assert_eq!(time.numer(), 1_018_000);
        assert_eq!(wall, ms(200));
        // ... and B's own steps are kept, across its wrap.
        assert_eq!(
            map.map(t(4_294_969_000), ms(300), false).0.numer(),
            1_027_000
        );
        assert_eq!(
            map.map(t(u64::from(u32::MAX) + 1 + 10_704), ms(400), false)
                .0
                .numer(),
            1_036_000
        );
        // A frame that arrived "earlier" does not move the wallclock back.
        assert_eq!(map.map(t(4_294_987_000), ms(350), false).1, ms(400));
    }

    #[test]
    fn the_size_of_a_vp8_keyframe_is_read_and_delta_frames_have_none() {
        // Frame tag (keyframe: bit 0 clear), start code, 320 × 180 (with scale bits set).
        let key = [
            0x50, 0x04, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x41, 0xb4, 0x80, 0, 0,
        ];
        assert_eq!(vp8_size(&key), Some((320, 180)));
        let mut delta = key;
        delta[0] |= 1;
        assert_eq!(vp8_size(&delta), None);
        assert_eq!(vp8_size(&key[..8]), None);
        assert_eq!(vp8_size(&[0x50, 0, 0, 1, 2, 3, 4, 5, 6, 7]), None);
    }

    #[test]
    fn a_speaker_needs_300_ms_of_speech_and_stays_through_short_pauses() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut speech = Speech::default();
        // Silence is not speech.
        for n in 0..20 {
            speech.level(-127, ms(n * 20));
        }
        assert!(!speech.speaking(ms(400)));
        // A click (one loud frame) is not a speaker.
        speech.level(-10, ms(400));
        assert!(!speech.speaking(ms(420)));
        assert!(!speech.speaking(ms(1500)));
        // Speech from 2000 ms on: a speaker from 2300 ms.
        for n in 100..116 {
            speech.level(-20, ms(n * 20));
        }
        assert!(!speech.speaking(ms(2200)));
        assert!(speech.speaking(ms(2300)));
        // A pause under a second keeps it; a longer one ends it.
        assert!(speech.speaking(ms(3200)));
        assert!(!speech.speaking(ms(3400)));
    }

    #[test]
    fn speakers_are_ranked_by_loudness_and_capped() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut all: Vec<(String, Speech)> = Vec::new();
        for (name, level) in [("a", -40), ("b", -5), ("c", -127), ("d", -30), ("e", -20)] {
            let mut s = Speech::default();
            for n in 0..30 {
                s.level(level, ms(n * 20));
            }
            all.push((name.to_string(), s));
        }
        let now = ms(600);
        let list = speakers(all.iter().map(|(a, s)| (a.as_str(), s)), now);
        assert_eq!(list, ["b", "e", "d"]);
    }
}
