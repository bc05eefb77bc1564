//! Floods, from 127.0.0.1, against a hub with its default limits while a real call goes on:
//! handshakes without a client certificate, half-open connections (their first packet reaches
//! the hub, its answers never come back: the user-space proxy drops them), and a kiosk (its real
//! certificate) asking for a call and hanging up again and again. The call's media goes on without a gap, the
//! flood is refused and counted in the metrics, and the hub's handshake state stays bounded.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use kioskd::call::{Button, KioskState};
use kioskd::edges::net::client;
use kioskd::edges::net::tls::client_config;
use kioskd::edges::netsim::UdpProxy;
use kioskd::edges::session::{MediaOptions, MediaStats, synthetic_devices};
use kioskd::media::codec::VideoSettings;
use kioskd::netsim::link::LinkConfig;
use kioskd::protocol::{ALPN, ClientMsg, HubMsg, Role, RoomState};
use kioskd::queue::QueueConfig;
use kioskd::roles::agent::AgentEvent;
use kioskd::roles::kiosk::KioskEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Connection attempts of each flood.
const UNAUTHENTICATED: usize = 300;
const HALF_OPEN: usize = 300;
/// Fresh call requests the flooding kiosk makes (the default limit is 10 a minute).
const CALL_REQUESTS: usize = 50;

fn video() -> VideoSettings {
    VideoSettings { width: 320, height: 240, fps: 30.0, bitrate_bps: 400_000, ..VideoSettings::default() }
}

/// A client that trusts the hub but has no certificate of its own: what anyone on the
/// network can send.
fn anonymous_config(pki: &Pki) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.material(Role::Hub, "hub.flood").ca[0].clone()).expect("CA certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(2_000))));
    config.transport_config(Arc::new(transport));
    config
}

/// An endpoint for [`anonymous_config`] clients, on the runtime it is called in.
fn anonymous_client(config: &quinn::ClientConfig) -> quinn::Endpoint {
    let mut ep =
        quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("client endpoint");
    ep.set_default_client_config(config.clone());
    ep
}

/// `attempts` connections to `to`, `at_once` at a time; each is refused, closed by the hub, or
/// abandoned after 2 s. Returns the connections that the hub kept open.
async fn connect_flood(ep: quinn::Endpoint, to: SocketAddr, attempts: usize, at_once: usize) -> usize {
    let mut set = JoinSet::new();
    let mut succeeded = 0;
    for _ in 0..attempts {
        if set.len() >= at_once
            && let Some(Ok(true)) = set.join_next().await
        {
            succeeded += 1;
        }
        let ep = ep.clone();
        set.spawn(async move {
            let Ok(connecting) = ep.connect(to, "localhost") else { return false };
            match tokio::time::timeout(Duration::from_secs(2), connecting).await {
                // The client's side of TLS 1.3 completes before the server has checked the
                // client's certificate: in only if the hub has not closed it 2 s later.
                Ok(Ok(conn)) => tokio::time::timeout(Duration::from_secs(2), conn.closed()).await.is_err(),
                _ => false,
            }
        });
    }
    while let Some(r) = set.join_next().await {
        succeeded += usize::from(matches!(r, Ok(true)));
    }
    succeeded
}

/// The hub's metrics page.
async fn scrape(addr: SocketAddr) -> String {
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("metrics connect");
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: hub\r\n\r\n").await.expect("request");
    let mut body = String::new();
    tokio::time::timeout(WAIT, sock.read_to_string(&mut body)).await.expect("answer").expect("read");
    body
}

/// The value of one metric line (`name{labels} value`).
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in:\n{body}"))
}

/// The longest gap between pictures shown, from the second second of the call on (the first
/// waits for its keyframe), in milliseconds.
fn longest_gap_ms(stats: &MediaStats) -> f64 {
    let t = &stats.display_times_us;
    let start = t.first().copied().unwrap_or(0) + 1_000_000;
    t.windows(2).filter(|w| w[0] >= start).map(|w| (w[1] - w[0]) as f64 / 1000.0).fold(0.0, f64::max)
}

fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// A kiosk (its own certificate, connected before the flood) asking for a call and hanging up
/// again at once,
/// `CALL_REQUESTS` times, as fast as the hub answers. Returns how many the hub answered
/// "busy".
async fn request_and_hang_up(mut s: client::Session) -> usize {
    let mut busy = 0;
    for _ in 0..CALL_REQUESTS {
        s.writer.send(&ClientMsg::RequestAgent { resume: None, consent: false }).await.expect("send");
        loop {
            match tokio::time::timeout(WAIT, s.reader.recv::<HubMsg>())
                .await
                .expect("an answer")
                .expect("msg")
            {
                HubMsg::Queued { call_id, .. } => {
                    s.writer.send(&ClientMsg::HangUp { call_id }).await.expect("send");
                    break;
                }
                HubMsg::Busy { .. } => {
                    busy += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    busy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_refused_and_counted_while_a_call_goes_on_without_a_gap() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_at = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let hub =
        start_hub_full(&pki, QueueConfig::default(), dir.path().join("events.jsonl"), Some(metrics_at)).await;
    let hub_addr = hub.local_addr;

    // The real call, and the kiosk that will flood with call requests, connected first.
    let opts = MediaOptions { video: video(), ..MediaOptions::default() };
    let target = pki.target(hub_addr, Role::Agent, "agent-1");
    let mut a = start_agent_full(
        target,
        "agent-1",
        Some(auto(None)),
        synthetic_devices(660.0, video()),
        opts.clone(),
    );
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut k =
        start_kiosk_full(&pki, hub_addr, "branch-1/kiosk-1", synthetic_devices(440.0, video()), opts, vec![]);
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
    let cfg = client_config(&pki.material(Role::Kiosk, "branch-1/kiosk-2")).expect("client config");
    let flooder = client::endpoint(cfg, false).expect("endpoint");
    let session = client::connect(&flooder, hub_addr, "localhost", Role::Kiosk).await.expect("session");
    let rss_before = resident_mib();

    // Half-open connections: through a proxy that loses everything on the way back.
    let blackhole = LinkConfig { loss: 1.0, ..LinkConfig::default() };
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let proxy = UdpProxy::start(loopback, hub_addr, LinkConfig::default(), blackhole).await.expect("proxy");
    let mut status = hub.watch_status();
    let most_pending = Arc::new(AtomicU32::new(0));
    let most = most_pending.clone();
    let watch_pending = tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let pending = status.borrow().flood.pending_handshakes;
            most.fetch_max(pending, Ordering::Relaxed);
        }
    });
    // The flooding clients run on a runtime (a thread) of their own, as if on another machine:
    // their handshakes' cryptography does not hold up the call's tasks on this runtime.
    let (anonymous, via_proxy) = (anonymous_config(&pki), proxy.local_addr());
    let floods = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            tokio::join!(
                connect_flood(anonymous_client(&anonymous), hub_addr, UNAUTHENTICATED, 100),
                connect_flood(anonymous_client(&anonymous), via_proxy, HALF_OPEN, 100),
            )
        })
    });
    let busy = request_and_hang_up(session).await;
    let (unauthenticated, half_open) =
        tokio::task::spawn_blocking(move || floods.join().expect("flood thread")).await.expect("join");
    assert_eq!(unauthenticated, 0, "a client without a certificate got in");
    assert_eq!(half_open, 0, "a half-open connection completed");
    let rss_after = resident_mib();

    // The call went on: hang up, and read its figures at both ends.
    k.panel.press(Button::HangUp);
    let at_agent = match a.wait_for("media figures", |e| matches!(e, AgentEvent::Media { .. })).await {
        AgentEvent::Media { stats, .. } => stats,
        _ => unreachable!("filtered above"),
    };
    let at_kiosk = match k.wait_for("media figures", |e| matches!(e, KioskEvent::Media { .. })).await {
        KioskEvent::Media { stats, .. } => stats,
        _ => unreachable!("filtered above"),
    };
    let body = scrape(hub.metrics_addr.expect("metrics on")).await;
    watch_pending.abort();
    let most_pending = most_pending.load(Ordering::Relaxed);
    drop(proxy);
    let _ = (k.stop.send(true), a.stop.send(true));
    let refused_rate = metric(&body, "kioskd_hub_flood_refused{reason=\"handshake_rate\"}");
    let refused_pending = metric(&body, "kioskd_hub_flood_refused{reason=\"pending_handshakes\"}");
    let refused_address = metric(&body, "kioskd_hub_flood_refused{reason=\"per_address\"}");
    let refused_calls = metric(&body, "kioskd_hub_flood_refused{reason=\"call_requests\"}");
    let refused_tls = metric(&body, "kioskd_hub_connections_refused");
    let retries = metric(&body, "kioskd_hub_address_retries");
    let (gap_agent, gap_kiosk) = (longest_gap_ms(&at_agent), longest_gap_ms(&at_kiosk));
    eprintln!(
        "flood: {{\"refused_handshake_rate\":{refused_rate},\"refused_pending\":{refused_pending},\
         \"refused_per_address\":{refused_address},\"refused_tls\":{refused_tls},\"retries\":{retries},\"most_pending\":{most_pending},\
         \"call_requests_refused\":{refused_calls},\"kiosk_told_busy\":{busy},\
         \"longest_gap_ms\":{{\"kiosk_to_agent\":{gap_agent:.0},\"agent_to_kiosk\":{gap_kiosk:.0}}},\
         \"audio_concealed\":{{\"at_agent\":{},\"at_kiosk\":{}}},\"rss_mib\":{{\"before\":{rss_before:.0},\"after\":{rss_after:.0}}}}}",
        at_agent.audio_frames_concealed, at_kiosk.audio_frames_concealed
    );
    // Refused, and counted.
    assert!(refused_tls > 0, "handshakes without a certificate were refused by TLS");
    assert!(refused_rate + refused_pending + refused_address > 0, "the flood limits refused nothing");
    assert_eq!(refused_calls as usize, CALL_REQUESTS - 10, "ten fresh requests a minute, the rest refused");
    assert_eq!(busy, CALL_REQUESTS - 10, "the kiosk was told busy for each refused request");
    // The call's media had no gap over 200 ms either way.
    assert!(gap_agent <= 200.0 && gap_kiosk <= 200.0, "gaps {gap_agent} / {gap_kiosk} ms");
    // Bounded: memory, and the handshakes in progress.
    assert!(most_pending <= 256, "{most_pending} handshakes in progress at once");
    assert!(rss_after - rss_before < 200.0, "memory grew {rss_before:.0} → {rss_after:.0} MiB");
}
