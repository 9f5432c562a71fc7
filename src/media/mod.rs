//! The media plane: a selective forwarding unit (SFU) built on str0m (sans-I/O WebRTC).
//!
//! It knows nothing of rooms' rules, of the signaling wire format or of actix. Rooms tell
//! it who is in which room ([`MediaPlane::add_participant`], [`MediaPlane::remove_participant`],
//! [`MediaPlane::remove_room`], [`MediaPlane::resumed`]) and pass on what clients signal to the server
//! ([`MediaPlane::signal`]); it answers through the sink given to [`MediaPlane::start`]
//! with [`MediaEvent`]s (the server's SDP, connection states, published tracks).
//!
//! All peers share one UDP socket. Threads of its own (never the actors' threads) do the
//! work: one runs the loop (it reads the socket with a short timeout, takes commands from
//! the handles, forwards what publishers send to the other peers of their room), and the
//! others help it drive the peers that have something to send (every peer's `Rtc` until
//! its next timeout). `docs/sfu.md` describes negotiation, limits and ports.

mod engine;
mod layers;
mod signal;

use serde_json::Value;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

/// What the media plane needs to start.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Where the UDP socket binds, e.g. `0.0.0.0:7882`; port 0 picks a free one.
    pub udp_bind: SocketAddr,
    /// The address put in the server's ICE candidates; `None`: the bind address, or the
    /// first non-loopback address of the machine when bound to an unspecified address.
    pub advertise_ip: Option<IpAddr>,
    /// The port put in the server's ICE candidates; `None`: the port bound.
    pub advertise_port: Option<u16>,
    /// At most this many incoming (published) tracks per participant; more are refused
    /// in the answer (their m-lines answered `inactive`).
    pub max_tracks_per_participant: usize,
    /// A peer whose connection (ICE and DTLS) is not up this long after its first offer,
    /// or that lost ICE and did not get it back this long after, is dropped from media;
    /// its seat in the room stays.
    pub ice_timeout: Duration,
    /// Receive and send buffer asked for the UDP socket (the kernel caps it at
    /// `net.core.rmem_max` / `wmem_max`); the size granted is logged.
    pub udp_buffer_bytes: usize,
    /// Threads that share the media work: one runs the loop, the others help poll peers
    /// (packetize, encrypt, send) when many have something to do at once. At least 1.
    pub threads: usize,
}

impl MediaConfig {
    pub const DEFAULT_MAX_TRACKS: usize = 4;
    pub const DEFAULT_ICE_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_UDP_BUFFER_BYTES: usize = 4 << 20;

    /// Defaults for everything but the bind address.
    pub fn new(udp_bind: SocketAddr) -> Self {
        Self {
            udp_bind,
            advertise_ip: None,
            advertise_port: None,
            max_tracks_per_participant: Self::DEFAULT_MAX_TRACKS,
            ice_timeout: Self::DEFAULT_ICE_TIMEOUT,
            udp_buffer_bytes: Self::DEFAULT_UDP_BUFFER_BYTES,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// A track a participant publishes, as the admin API may show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublishedTrack {
    /// The media id of the track in the publisher's own session.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: &'static str,
}

/// What the media plane tells the rest of the service.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// Signaling from the server to one participant, in the SDK's `signal` data shape
    /// (`{description: {type, sdp}}`): deliver as `signal {from: "sfu", data}`.
    Signal {
        room: String,
        to: String,
        data: Value,
    },
    /// The participant's media connection came up (`true`) or was dropped (`false`: ICE
    /// never completed within the timeout, or the connection was lost).
    PeerState {
        room: String,
        address: String,
        connected: bool,
    },
    /// The tracks the participant publishes now.
    Tracks {
        room: String,
        address: String,
        published: Vec<PublishedTrack>,
    },
    /// The room's active speakers changed: addresses, loudest first (empty: nobody).
    ActiveSpeakers { room: String, speakers: Vec<String> },
    /// What the participant signaled could not be used (malformed or unexpected SDP,
    /// a bad candidate); other peers are not affected.
    Rejected {
        room: String,
        address: String,
        reason: String,
    },
}

/// Commands from the handles to the media thread.
#[derive(Debug)]
enum Command {
    Add {
        room: String,
        address: String,
        can_publish: bool,
        can_subscribe: bool,
    },
    Remove {
        room: String,
        address: String,
    },
    RemoveRoom {
        room: String,
    },
    Signal {
        room: String,
        address: String,
        data: Value,
    },
    Resumed {
        room: String,
        address: String,
    },
}

/// A cloneable handle on the media plane. Every method only queues a command: none waits
/// for the media thread. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct MediaPlane {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for MediaPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPlane")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl MediaPlane {
    /// Binds the UDP socket and starts the media thread; `sink` gets every [`MediaEvent`]
    /// (on the media thread: it must not block).
    pub fn start(
        config: MediaConfig,
        sink: impl Fn(MediaEvent) + Send + 'static,
    ) -> std::io::Result<Self> {
        let socket = bind_udp(config.udp_bind, config.udp_buffer_bytes)?;
        let bound = socket.local_addr()?;
        let ip = config
            .advertise_ip
            .unwrap_or_else(|| default_advertise_ip(bound.ip()));
        let advertised = SocketAddr::new(ip, config.advertise_port.unwrap_or(bound.port()));
        let buffers = socket2::SockRef::from(&socket);
        let (receive, send) = (buffers.recv_buffer_size()?, buffers.send_buffer_size()?);
        tracing::info!(
            bind = %bound,
            advertise = %advertised,
            receive_buffer = receive,
            send_buffer = send,
            "media plane listening (UDP)"
        );
        // Linux reports twice the size granted (the other half is its bookkeeping).
        if receive < config.udp_buffer_bytes {
            tracing::warn!(
                asked = config.udp_buffer_bytes,
                granted = receive / 2,
                "the media socket's receive buffer is smaller than asked: raise \
                 net.core.rmem_max (and wmem_max) to at least rtc_udp_buffer_bytes"
            );
        }
        let (tx, rx) = mpsc::channel();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads.max(1))
            .thread_name(|i| format!("convene-media-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let engine = engine::Engine::new(socket, advertised, config, Box::new(sink));
        // The loop runs on one of the pool's threads, so the others help it at once.
        std::thread::Builder::new()
            .name("convene-media".into())
            .spawn(move || pool.install(move || engine.run(rx)))?;
        Ok(Self {
            tx,
            local_addr: advertised,
        })
    }

    /// The participant takes part in the room's media (it may now signal). Without
    /// `can_publish`, every send track of its offers is answered `inactive` (nothing it
    /// sends is taken); without `can_subscribe`, nothing is forwarded to it.
    pub fn add_participant(
        &self,
        room: &str,
        address: &str,
        can_publish: bool,
        can_subscribe: bool,
    ) {
        self.send(Command::Add {
            room: room.into(),
            address: address.into(),
            can_publish,
            can_subscribe,
        });
    }

    /// The participant is gone: nothing is forwarded from or to it any more, and the
    /// others' sessions drop its tracks.
    pub fn remove_participant(&self, room: &str, address: &str) {
        self.send(Command::Remove {
            room: room.into(),
            address: address.into(),
        });
    }

    /// The room is gone, with everyone in it.
    pub fn remove_room(&self, room: &str) {
        self.send(Command::RemoveRoom { room: room.into() });
    }

    /// What a participant signals to the server: `{description: {type, sdp}}` or
    /// `{candidate: {candidate, sdpMid, sdpMLineIndex}}`.
    pub fn signal(&self, room: &str, address: &str, data: Value) {
        self.send(Command::Signal {
            room: room.into(),
            address: address.into(),
            data,
        });
    }

    /// The participant resumed its signaling socket: what the media plane told it while
    /// the socket was gone was lost, so an offer of the server still waiting for its answer
    /// is sent again (the peer connection itself is kept).
    pub fn resumed(&self, room: &str, address: &str) {
        self.send(Command::Resumed {
            room: room.into(),
            address: address.into(),
        });
    }

    fn send(&self, command: Command) {
        if self.tx.send(command).is_err() {
            tracing::error!("media thread is gone; command dropped");
        }
    }
}

/// Binds the media socket with receive and send buffers of (up to) `buffer_bytes`: all
/// peers share it, so a burst of every publisher's packets must fit in it while the media
/// thread is busy or not scheduled. The kernel caps the size at `net.core.rmem_max` /
/// `wmem_max` without failing.
fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(buffer_bytes)?;
    socket.set_send_buffer_size(buffer_bytes)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The address to advertise for a socket bound to `bound`: itself, unless unspecified
/// (0.0.0.0 or ::), then the first non-loopback address of the machine (found by asking
/// the kernel for a route; nothing is sent), and loopback when there is none.
fn default_advertise_ip(bound: IpAddr) -> IpAddr {
    if !bound.is_unspecified() {
        return bound;
    }
    let probe = || -> std::io::Result<IpAddr> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.connect("192.0.2.1:9")?;
        Ok(socket.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => ip,
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_socket_gets_the_buffers_asked_within_the_kernels_cap() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        // Linux doubles what it grants; the default (rmem_default) is about 208 KiB.
        assert!(granted >= 2 * cap.min(1 << 20), "granted {granted}");
    }

    #[test]
    fn a_specified_bind_address_is_advertised_as_is() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(default_advertise_ip(ip), ip);
    }

    #[test]
    fn an_unspecified_bind_address_advertises_a_usable_one() {
        let ip = default_advertise_ip("0.0.0.0".parse().unwrap());
        assert!(!ip.is_unspecified());
    }
}
