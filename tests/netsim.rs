//! The impairment proxy between real sockets on 127.0.0.1: a UDP echo server, then the hub over
//! QUIC. Tests wait on replies and on the proxy's counters, with timeouts; they never sleep.

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{Pki, WAIT, start_hub};
use kioskd::edges::net::{client, tls};
use kioskd::edges::netsim::MAX_CLIENTS;
use kioskd::edges::netsim::{Direction, ProxyStats, RunningProxy, UdpProxy};
use kioskd::netsim::LinkConfig;
use kioskd::protocol::{ClientMsg, HubMsg, Role};
use kioskd::queue::QueueConfig;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, timeout};

const MS: Duration = Duration::from_millis(1);

fn localhost() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A UDP server on 127.0.0.1 that sends every datagram back where it came from.
async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let socket = UdpSocket::bind(localhost()).await.expect("bind echo server");
    let addr = socket.local_addr().expect("echo address");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            if let Ok((len, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..len], from).await;
            }
        }
    });
    (addr, task)
}

/// A client socket sending numbered pings to the proxy; replies come in on `replies` as
/// (id, arrival time).
struct Pinger {
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    replies: mpsc::Receiver<(u64, Instant)>,
    _reader: JoinHandle<()>,
}

impl Pinger {
    async fn new(to: SocketAddr) -> Self {
        let socket = Arc::new(UdpSocket::bind(localhost()).await.expect("bind client"));
        // Bounded: the tests send at most a few thousand pings and read every reply.
        let (tx, replies) = mpsc::channel(4096);
        let reader = Arc::clone(&socket);
        let _reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(len) = reader.recv(&mut buf).await {
                let Some(id) = buf.get(..len).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                    continue;
                };
                if tx.send((id, Instant::now())).await.is_err() {
                    return;
                }
            }
        });
        socket.connect(to).await.expect("connect client");
        Self { socket, to, replies, _reader }
    }

    async fn ping(&self, id: u64) {
        self.socket.send(&id.to_be_bytes()).await.expect("send ping");
    }

    /// Sends `ids` one per millisecond; returns when each was sent.
    async fn ping_paced(&self, ids: impl IntoIterator<Item = u64>) -> Vec<(u64, Instant)> {
        let mut tick = tokio::time::interval(MS);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut sent = Vec::new();
        for id in ids {
            tick.tick().await;
            sent.push((id, Instant::now()));
            self.ping(id).await;
        }
        sent
    }

    /// The next `n` replies, failing after [`WAIT`].
    async fn replies(&mut self, n: usize) -> Vec<(u64, Instant)> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match timeout(WAIT, self.replies.recv()).await {
                Ok(Some(reply)) => got.push(reply),
                _ => panic!("{} of {n} replies from {} within {WAIT:?}", got.len(), self.to),
            }
        }
        got
    }
}

/// Waits until the proxy has settled every ping it got: each one delivered or lost upstream,
/// and each echo delivered or lost downstream.
async fn settled(proxy: &RunningProxy, pings: u64) -> ProxyStats {
    let done = |s: &ProxyStats| {
        s.up.sent == pings
            && s.up.in_flight() == 0
            && s.down.sent == s.up.delivered
            && s.down.in_flight() == 0
    };
    timeout(WAIT, proxy.wait_stats(done))
        .await
        .unwrap_or_else(|_| panic!("proxy never settled: {:?}", proxy.stats()))
}

#[tokio::test]
async fn ten_percent_loss_each_way_echoes_about_81_percent() {
    let (server, _echo) = echo_server().await;
    let lossy = |seed| LinkConfig { loss: 0.10, seed, ..LinkConfig::default() };
    let proxy = UdpProxy::start(localhost(), server, lossy(1), lossy(2)).await.expect("proxy starts");
    let mut pinger = Pinger::new(proxy.local_addr()).await;

    const PINGS: u64 = 2000;
    pinger.ping_paced(0..PINGS).await;
    let stats = settled(&proxy, PINGS).await;
    let replies = pinger.replies(stats.down.delivered as usize).await;

    let ids: HashSet<u64> = replies.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), replies.len(), "an echo came back twice");
    let rate = replies.len() as f64 / PINGS as f64;
    assert!((rate - 0.81).abs() < 0.03, "echo success {rate:.3}, expected about 0.81; {stats:?}");
    assert_eq!(stats.up.lost_random + stats.down.lost_random + replies.len() as u64, PINGS);
    assert_eq!((stats.up.lost(), stats.down.lost()), (stats.up.lost_random, stats.down.lost_random));
    assert_eq!((stats.clients, stats.refused), (1, 0));
    proxy.stop().await;
}

#[tokio::test]
async fn fifty_ms_each_way_makes_the_round_trip_at_least_100_ms() {
    let (server, _echo) = echo_server().await;
    let slow = LinkConfig { delay: 50 * MS, ..LinkConfig::default() };
    let proxy = UdpProxy::start(localhost(), server, slow.clone(), slow).await.expect("proxy starts");
    let mut pinger = Pinger::new(proxy.local_addr()).await;

    let sent = pinger.ping_paced(0..20).await;
    let replies = pinger.replies(20).await;
    for (id, at) in replies {
        let sent_at = sent.iter().find(|(i, _)| *i == id).expect("a ping we sent").1;
        let rtt = at - sent_at;
        assert!(rtt >= 100 * MS, "ping {id}: round trip {rtt:?}");
        assert!(rtt < 100 * MS + WAIT / 2, "ping {id}: round trip {rtt:?}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn outage_loses_everything_sent_within_it() {
    let (server, _echo) = echo_server().await;
    let clear = LinkConfig::default();
    let proxy =
        UdpProxy::start(localhost(), server, clear.clone(), clear.clone()).await.expect("proxy starts");
    let mut pinger = Pinger::new(proxy.local_addr()).await;
    let outage = LinkConfig { outages: vec![(Duration::ZERO, Duration::from_secs(3600))], ..clear.clone() };
    let ids = |replies: Vec<(u64, Instant)>| replies.into_iter().map(|(id, _)| id).collect::<Vec<_>>();

    // The link works.
    pinger.ping(0).await;
    assert_eq!(ids(pinger.replies(1).await), [0]);

    // Uplink cut: the 100 pings sent during the outage are lost, nothing else.
    proxy.set_config(Direction::Up, outage.clone()).expect("valid config");
    pinger.ping_paced(1..=100).await;
    let stats = settled(&proxy, 101).await;
    assert_eq!((stats.up.lost_outage, stats.up.lost(), stats.up.delivered), (100, 100, 1));
    proxy.set_config(Direction::Up, clear.clone()).expect("valid config");
    pinger.ping_paced(101..=150).await;
    assert_eq!(ids(pinger.replies(50).await), (101..=150).collect::<Vec<_>>());

    // Downlink cut: the echoes of the 50 pings sent during the outage are lost.
    proxy.set_config(Direction::Down, outage).expect("valid config");
    pinger.ping_paced(151..=200).await;
    let stats = settled(&proxy, 201).await;
    assert_eq!((stats.down.lost_outage, stats.down.lost(), stats.down.delivered), (50, 50, 51));
    assert!(pinger.replies.try_recv().is_err(), "an echo came through the outage");
    proxy.set_config(Direction::Down, clear).expect("valid config");
    pinger.ping_paced(201..=210).await;
    assert_eq!(ids(pinger.replies(10).await), (201..=210).collect::<Vec<_>>());
    proxy.stop().await;
}

#[tokio::test]
async fn quic_handshake_and_request_through_loss_and_delay() {
    let pki = Pki::new();
    let hub = start_hub(&pki, QueueConfig::default()).await;
    let bad = |seed| LinkConfig { loss: 0.05, delay: 40 * MS, seed, ..LinkConfig::default() };
    let proxy = UdpProxy::start(localhost(), hub.addr(), bad(3), bad(4)).await.expect("proxy starts");

    let config = tls::client_config(&pki.material(Role::Kiosk, "branch-1/kiosk-1")).expect("client config");
    let endpoint = client::endpoint(config, false).expect("client endpoint");
    let mut session = timeout(WAIT, client::connect(&endpoint, proxy.local_addr(), "localhost", Role::Kiosk))
        .await
        .expect("handshake within WAIT")
        .expect("welcomed by the hub");
    assert_eq!(session.id, "branch-1/kiosk-1");

    session
        .writer
        .send(&ClientMsg::RequestAgent { resume: None, consent: false })
        .await
        .expect("request sent");
    let queued = timeout(WAIT, async {
        loop {
            let msg = session.reader.recv::<HubMsg>().await.expect("hub answers");
            if let HubMsg::Queued { .. } = msg {
                return msg;
            }
        }
    })
    .await
    .expect("queued within WAIT");
    assert!(matches!(queued, HubMsg::Queued { position: 1, .. }), "{queued:?}");

    // Everything went through the proxy, 40 ms each way.
    assert!(session.conn.rtt() >= 80 * MS, "QUIC measured {:?}", session.conn.rtt());
    let stats = proxy.stats();
    assert!(stats.up.delivered > 0 && stats.down.delivered > 0, "{stats:?}");
    assert_eq!(stats.clients, 1);

    session.conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    proxy.stop().await;
}

#[tokio::test]
async fn at_most_64_clients_are_served() {
    let (server, _echo) = echo_server().await;
    let proxy = UdpProxy::start(localhost(), server, LinkConfig::default(), LinkConfig::default())
        .await
        .expect("proxy starts");
    let mut pingers = Vec::new();
    for _ in 0..=MAX_CLIENTS {
        pingers.push(Pinger::new(proxy.local_addr()).await);
    }
    for (id, pinger) in pingers.iter_mut().enumerate() {
        pinger.ping(id as u64).await;
        if id < MAX_CLIENTS {
            assert_eq!(pinger.replies(1).await[0].0, id as u64, "client {id} served");
        }
    }
    let full = |s: &ProxyStats| s.refused == 1;
    let stats = timeout(WAIT, proxy.wait_stats(full)).await.expect("the 65th client refused");
    assert_eq!((stats.clients, stats.up.sent, stats.down.delivered), (MAX_CLIENTS, 64, 64));
    // Empty and oversized-for-the-pinger datagrams pass like any other.
    pingers[0].socket.send(&[]).await.expect("send empty datagram");
    pingers[0].socket.send(&[7; 1500]).await.expect("send large datagram");
    timeout(WAIT, proxy.wait_stats(|s| s.down.delivered == 66)).await.expect("both echoed");
    proxy.stop().await;
}

// ----- whole calls through the proxy (the mechanisms of media::loss, video_reorder, ladder) -----

/// A two-way call of `secs` seconds (320×240 video to keep the machine free) through the proxy.
async fn call_through(
    scenario: kioskd::roles::bench::Scenario,
    secs: u64,
) -> kioskd::roles::bench::BenchResult {
    let video = kioskd::media::codec::VideoSettings { width: 320, height: 240, ..Default::default() };
    kioskd::roles::bench::run(&scenario, Duration::from_secs(secs), video).await.expect("the call runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_twenty_percent_loss_keeps_its_sound_and_picture() {
    let scenario = kioskd::roles::bench::named("loss20", 7).expect("scenario");
    let r = call_through(scenario, 10).await;
    assert!(!r.call_dropped, "{:?}", r.errors);
    // The receivers reported the loss; the senders answered with copies of earlier frames.
    assert!(r.audio_copies_sent > 300, "copies sent: {}", r.audio_copies_sent);
    // Targets of the benchmark are 95 % and a freeze under 1 s; a loaded CI machine gets slack.
    assert!(r.audio_frames_played_pct >= 90.0, "audio played {} %", r.audio_frames_played_pct);
    assert!(r.video_frames_displayed_pct >= 80.0, "video shown {} %", r.video_frames_displayed_pct);
    assert!(r.longest_freeze_ms < 2000.0, "longest freeze {} ms", r.longest_freeze_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_a_three_second_outage_and_its_picture_and_texts_return() {
    // An 80 ms round trip: QUIC's timers back off further than on 127.0.0.1.
    let scenario = kioskd::roles::bench::Scenario {
        name: "outage".into(),
        link: LinkConfig { delay: 40 * MS, jitter: 10 * MS, ..LinkConfig::default() },
        outage: Some((Duration::from_secs(3), Duration::from_secs(3))),
    };
    // The bench's target is 1 s (0.4–0.6 s measured); a loaded CI machine gets slack. Before
    // frames were abandoned at their deadline, the outage's frames were retransmitted first
    // and the picture came back 3–6 s after the network, or not at all.
    assert_came_back(&call_through(scenario, 10).await, 2000.0);
}

/// The call went on through the outage, a fresh picture came back each way within
/// `limit_ms` of the network, and the text sent each way in the middle of it was shown.
fn assert_came_back(r: &kioskd::roles::bench::BenchResult, limit_ms: f64) {
    assert!(!r.call_dropped && r.errors.is_empty(), "{:?}", r.errors);
    for (way, d) in [("to the agent", &r.to_agent), ("to the kiosk", &r.to_kiosk)] {
        let recovery = d.recovery_ms.unwrap_or_else(|| panic!("no picture {way} after the outage"));
        assert!(recovery < limit_ms, "{way}: recovery {recovery} ms; freezes {:?}", d.freezes);
    }
    let texts = r.outage_texts.as_ref().expect("texts sent during the outage");
    assert_eq!((texts.sent, texts.delivered), (2, 2), "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_connection_lives_resumes_the_same_call() {
    // 8 s: QUIC gives the connection up after 6 s of silence; the kiosk reconnects, faster
    // while its call is held, and the hub gives it the same call back.
    let scenario = kioskd::roles::bench::Scenario {
        name: "long outage".into(),
        link: LinkConfig::default(),
        outage: Some((Duration::from_secs(2), Duration::from_secs(8))),
    };
    assert_came_back(&call_through(scenario, 14).await, 3000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_narrow_link_fits_its_video_to_it_and_keeps_its_sound() {
    // 300 kbit/s each way with a 1.7 s buffer: a sender that ignored the receivers' caps would
    // send ~1 Mbit/s and keep the buffer full (seconds of delay, then tail drops).
    let scenario = kioskd::roles::bench::Scenario {
        name: "narrow".into(),
        link: LinkConfig { rate_bps: Some(300_000), queue_bytes: 64 * 1024, ..LinkConfig::default() },
        outage: None,
    };
    let r = call_through(scenario, 12).await;
    assert!(!r.call_dropped, "{:?}", r.errors);
    for (way, d) in [("to the agent", &r.to_agent), ("to the kiosk", &r.to_kiosk)] {
        // Audio and headers included, each sender stayed under the link's rate.
        assert!(d.sent_kbps < 300.0, "{way}: sent {} kbit/s", d.sent_kbps);
        // Time-compressed frames count as played. The bench's target is 99 % for 20 s on
        // 500 kbit/s; on 300 kbit/s the call's first keyframe and its start at 400 kbit/s
        // cost a few per cent of a 12 s call (93.7–95 % measured), and CI gets slack.
        assert!(
            d.audio_frames_played_pct >= 88.0,
            "{way}: audio played {} %: {d:?}",
            d.audio_frames_played_pct
        );
        assert!(
            d.video_latency_after_5s_ms.p95 < 1000.0,
            "{way}: video p95 {:?}",
            d.video_latency_after_5s_ms
        );
    }
    // The buffer never filled.
    assert_eq!(r.path.up.lost_queue + r.path.down.lost_queue, 0, "{:?}", r.path);
}

// ----- one video frame per stream, delivered by its deadline or reset (net::frame) -----

/// A bare QUIC server (the hub's TLS) behind a proxy, and a client connection through it.
async fn quic_pair(pki: &Pki) -> (quinn::Endpoint, quinn::Connection, quinn::Connection, RunningProxy) {
    let server_cfg = tls::server_config(&pki.material(Role::Hub, "hub")).expect("server config");
    let server = quinn::Endpoint::server(server_cfg, localhost()).expect("server endpoint");
    let proxy = UdpProxy::start(
        localhost(),
        server.local_addr().expect("server address"),
        LinkConfig::default(),
        LinkConfig::default(),
    )
    .await
    .expect("proxy starts");
    let config = tls::client_config(&pki.material(Role::Kiosk, "branch-1/kiosk-1")).expect("client config");
    let endpoint = client::endpoint(config, false).expect("client endpoint");
    let connecting = endpoint.connect(proxy.local_addr(), "localhost").expect("connect");
    let (client_conn, server_conn) = timeout(WAIT, async {
        let incoming = server.accept().await.expect("an incoming connection");
        let (c, s) = tokio::join!(connecting, incoming);
        (c.expect("client side"), s.expect("server side"))
    })
    .await
    .expect("handshake within WAIT");
    (endpoint, client_conn, server_conn, proxy)
}

#[tokio::test]
async fn a_frame_sent_into_an_outage_is_abandoned_not_retransmitted_after_it() {
    use kioskd::edges::net::frame::{FrameSent, send_frame};
    let pki = Pki::new();
    let (endpoint, conn, server_conn, proxy) = quic_pair(&pki).await;
    let frame = vec![7u8; 200_000];

    // On a clear path: delivered whole, and the sender learns it.
    let sent = send_frame(&conn, &frame[..20_000], false, Instant::now() + 2000 * MS).await;
    assert_eq!(sent, FrameSent::Delivered);
    let mut recv = timeout(WAIT, server_conn.accept_uni()).await.expect("a stream").expect("accepted");
    let got = timeout(WAIT, recv.read_to_end(1 << 20)).await.expect("read in time").expect("whole frame");
    assert_eq!(got.len(), 20_000);

    // The path goes away for 1.5 s: a 200 kB frame with a 300 ms deadline is abandoned.
    let cut = LinkConfig { outages: vec![(Duration::ZERO, 1500 * MS)], ..LinkConfig::default() };
    proxy.set_config(Direction::Up, cut.clone()).expect("outage up");
    proxy.set_config(Direction::Down, cut).expect("outage down");
    let sent = send_frame(&conn, &frame, false, Instant::now() + 300 * MS).await;
    assert!(matches!(sent, FrameSent::Late | FrameSent::NotSent), "{sent:?}");
    let before = proxy.stats().up;

    // After the outage, a fresh frame gets through; the abandoned one is not retransmitted:
    // the receiver sees it reset, and far fewer packets crossed than its 200 kB need.
    let fresh = timeout(WAIT, async {
        loop {
            if send_frame(&conn, &frame[..1_000], false, Instant::now() + 1000 * MS).await
                == FrameSent::Delivered
            {
                return;
            }
            assert!(conn.close_reason().is_none(), "the connection ended: {:?}", conn.close_reason());
            tokio::task::yield_now().await;
        }
    });
    fresh.await.expect("a fresh frame delivered after the outage");
    // Streams are accepted in the order they were opened: the abandoned frame's comes first.
    let mut outcomes = Vec::new();
    while let Ok(Ok(mut s)) = timeout(200 * MS, server_conn.accept_uni()).await {
        outcomes
            .push(timeout(WAIT, s.read_to_end(1 << 20)).await.expect("each stream ends").map(|d| d.len()));
    }
    assert!(outcomes.first().is_some_and(|o| o.is_err()), "the abandoned frame was reset: {outcomes:?}");
    assert!(outcomes.iter().all(|o| !matches!(o, Ok(n) if *n == frame.len())), "{outcomes:?}");
    let after = proxy.stats().up;
    let crossed = after.delivered - before.delivered;
    assert!(crossed < 100, "{crossed} packets crossed after the outage (the frame needs ~170)");

    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    proxy.stop().await;
}
