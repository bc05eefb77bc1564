//! The call spine end to end over real QUIC and mutual TLS on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use kioskd::call::{Button, KioskState};
use kioskd::edges::net::client;
use kioskd::edges::net::close_code;
use kioskd::protocol::{ClientMsg, EndReason, HubMsg, Role, RoomState, WithdrawReason};
use kioskd::queue::QueueConfig;
use kioskd::roles::agent::{AgentCommand, AgentEvent};
use kioskd::roles::kiosk::KioskEvent;

fn queue(offer_timeout_ms: u64) -> QueueConfig {
    QueueConfig {
        offer_timeout: Duration::from_millis(offer_timeout_ms),
        kiosk_grace: Duration::from_secs(5),
        ..QueueConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kiosks_two_agents_complete_all_calls_in_arrival_order() {
    let pki = Pki::new();
    let hub = start_hub(&pki, queue(10_000)).await;
    // agent-1 goes IDLE before agent-2, so it has been idle longest.
    let mut agents: Vec<TestAgent> = Vec::new();
    for a in 1..=2 {
        let mut agent = start_agent(&pki, hub.addr(), &format!("agent-{a}"), Some(auto(None)));
        agent.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
        agents.push(agent);
    }
    let mut kiosks: Vec<TestKiosk> =
        (1..=5).map(|k| start_kiosk(&pki, hub.addr(), &format!("branch-1/kiosk-{k}"))).collect();
    for k in &mut kiosks {
        k.wait_state("idle", |s| *s == KioskState::Idle).await;
    }
    // Press CALL one kiosk after the other; each press is at the hub before the next.
    for k in &mut kiosks {
        k.panel.press(Button::Call);
        k.wait_for("a call id", |e| matches!(e, KioskEvent::CallId { .. })).await;
    }
    let mut texts = 0;
    for k in &mut kiosks {
        k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
        k.texts.send(format!("hello from {}", k.id)).await.expect("kiosk takes text");
        k.wait_for("agent's greeting", |e| matches!(e, KioskEvent::TextReceived { .. })).await;
        k.wait_for("own text delivered", |e| matches!(e, KioskEvent::TextDelivered { .. })).await;
        texts += 2;
        // The customer hangs up, which frees the agent for the next caller in line.
        k.panel.press(Button::HangUp);
        let end = k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
        assert_eq!(end, KioskState::Ended { reason: EndReason::KioskHungUp });
    }
    assert_eq!(texts, 10);
    hub.wait_status("five calls ended", |s| s.stats.ended == 5).await;
    let status = hub.hub.status();
    assert_eq!((status.stats.connected, status.stats.ended, status.stats.abandoned), (5, 5, 0));
    assert_eq!(status.stats.texts_relayed, 10);
    for k in &kiosks {
        let _ = k.stop.send(true);
    }
    let log = hub.events();
    let offered: Vec<String> = log
        .iter()
        .filter(|e| e["event"] == "offered")
        .map(|e| e["kiosk"].as_str().expect("kiosk").to_string())
        .collect();
    let expected: Vec<String> = (1..=5).map(|k| format!("branch-1/kiosk-{k}")).collect();
    assert_eq!(offered, expected, "offers follow arrival order");
    // The first two offers go to the two agents, the longest idle (agent-1) first.
    let first_agents: Vec<&str> = log
        .iter()
        .filter(|e| e["event"] == "offered")
        .take(2)
        .map(|e| e["agent"].as_str().expect("agent"))
        .collect();
    assert_eq!(first_agents, ["agent-1", "agent-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_offer_moves_to_the_next_agent() {
    let pki = Pki::new();
    let hub = start_hub(&pki, queue(800)).await;
    // agent-a goes IDLE first (so it is offered first) and never answers.
    let mut a = start_agent(&pki, hub.addr(), "agent-a", None);
    a.wait_for("welcome", |e| matches!(e, AgentEvent::Welcome { .. })).await;
    a.command(AgentCommand::Idle).await;
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut b = start_agent(&pki, hub.addr(), "agent-b", Some(auto(None)));
    b.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;

    let mut k = start_kiosk(&pki, hub.addr(), "branch-2/kiosk-1");
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    let call_id = match a.wait_for("offer", |e| matches!(e, AgentEvent::Offer { .. })).await {
        AgentEvent::Offer { call_id, .. } => call_id,
        _ => unreachable!(),
    };
    a.wait_for("withdrawn", |e| {
        matches!(e, AgentEvent::OfferWithdrawn { reason: WithdrawReason::Timeout, call_id: c, .. } if *c == call_id)
    })
    .await;
    a.wait_for("CLOSE after a missed offer", |e| {
        matches!(e, AgentEvent::Room { state: RoomState::Close, .. })
    })
    .await;
    match b.wait_for("offer", |e| matches!(e, AgentEvent::Offer { .. })).await {
        AgentEvent::Offer { call_id: c, .. } => assert_eq!(c, call_id, "same call, same place"),
        _ => unreachable!(),
    }
    let state = k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
    assert_eq!(state, KioskState::Connected { agent: "agent-b".into(), recorded: false });
    let log = hub.events();
    assert!(log.iter().any(|e| e["event"] == "offer_timeout" && e["agent"] == "agent-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_disconnect_ends_the_call_at_the_kiosk() {
    let pki = Pki::new();
    let hub = start_hub(&pki, queue(10_000)).await;
    let mut a = start_agent(&pki, hub.addr(), "agent-1", Some(auto(None)));
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut k = start_kiosk(&pki, hub.addr(), "branch-3/kiosk-1");
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;
    a.wait_for("connected", |e| matches!(e, AgentEvent::Connected { .. })).await;
    // The agent's process dies: no hang-up message, the connection just goes away.
    a.task.abort();
    let end = k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    assert_eq!(end, KioskState::Ended { reason: EndReason::AgentDisconnected });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_valid_certificate_are_refused() {
    let pki = Pki::new();
    let hub = start_hub(&pki, queue(10_000)).await;

    // A certificate from another deployment's CA.
    let other = Pki::new();
    let mut foreign = start_agent_with(
        kioskd::edges::net::client::HubTarget {
            addresses: vec![hub.addr().to_string()],
            server_name: "localhost".into(),
            client: kioskd::edges::net::tls::client_config(&{
                let mut m = other.material(Role::Agent, "agent-x");
                m.ca = pki.material(Role::Agent, "unused").ca; // trusts the real hub
                m
            })
            .expect("config"),
            silent: kioskd::edges::net::client::HUB_SILENT,
        },
        "agent-x",
        None,
    );
    let result =
        tokio::time::timeout(WAIT, &mut foreign.task).await.expect("foreign agent ends").expect("joins");
    assert!(result.is_err(), "a foreign certificate must not get a session");
    hub.wait_status("one refusal", |s| s.refused >= 1).await;

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    for c in pki.material(Role::Kiosk, "unused").ca {
        roots.add(c).expect("root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![kioskd::protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic");
    let ep =
        client::endpoint(quinn::ClientConfig::new(std::sync::Arc::new(crypto)), false).expect("endpoint");
    let refused = client::connect(&ep, hub.addr(), "localhost", Role::Kiosk).await;
    assert!(refused.is_err(), "no certificate, no session");
    hub.wait_status("two refusals", |s| s.refused >= 2).await;

    // A kiosk certificate trying to act as an agent.
    let kiosk_cfg = kioskd::edges::net::tls::client_config(&pki.material(Role::Kiosk, "branch-9/kiosk-9"))
        .expect("config");
    let ep = client::endpoint(kiosk_cfg, false).expect("endpoint");
    match client::connect(&ep, hub.addr(), "localhost", Role::Agent).await {
        Err(client::ClientError::Refused(reason)) => {
            assert!(reason.contains("cannot act as agent"), "{reason}")
        }
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("a kiosk certificate acted as an agent"),
    }
    assert_eq!(hub.hub.status().stats.protocol_errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_control_stream_disconnects_only_that_peer() {
    let pki = Pki::new();
    let hub = start_hub(&pki, queue(10_000)).await;
    let mut a = start_agent(&pki, hub.addr(), "agent-1", Some(auto(Some(400))));
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut k = start_kiosk(&pki, hub.addr(), "branch-4/kiosk-1");
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    k.wait_state("connected", |s| matches!(s, KioskState::Connected { .. })).await;

    let garbage: [&[u8]; 3] = [
        b"\x01\x00\x00\x00\x05hello",           // right header, not JSON
        b"\x01\xff\xff\xff\xff",                // 4 GiB declared
        b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n", // another protocol
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let cfg = kioskd::edges::net::tls::client_config(
            &pki.material(Role::Kiosk, &format!("branch-4/rogue-{i}")),
        )
        .expect("cfg");
        let ep = client::endpoint(cfg, false).expect("endpoint");
        let conn = ep.connect(hub.addr(), "localhost").expect("connect").await.expect("handshake");
        let (mut send, _recv) = conn.open_bi().await.expect("stream");
        send.write_all(bytes).await.expect("write");
        let reason = tokio::time::timeout(WAIT, conn.closed()).await.expect("hub closes the rogue peer");
        match reason {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, quinn::VarInt::from_u32(close_code::PROTOCOL), "{c:?}");
            }
            other => panic!("closed the wrong way: {other}"),
        }
    }
    // The honest call carried on and ends normally.
    let end = k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    assert_eq!(end, KioskState::Ended { reason: EndReason::AgentHungUp });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_survive_a_kiosk_reconnect_and_are_shown_once() {
    let pki = Pki::new();
    let hub = start_hub(&pki, queue(10_000)).await;
    let mut agent = start_agent(
        &pki,
        hub.addr(),
        "agent-1",
        Some(kioskd::roles::agent::AutoAnswer { greeting: None, ..auto(None) }),
    );
    agent.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;

    // A kiosk session driven by hand, so that its connection can be cut mid-call.
    let cfg =
        kioskd::edges::net::tls::client_config(&pki.material(Role::Kiosk, "branch-5/kiosk-1")).expect("cfg");
    let ep = client::endpoint(cfg, false).expect("endpoint");
    let mut s1 = client::connect(&ep, hub.addr(), "localhost", Role::Kiosk).await.expect("session");
    s1.writer.send(&ClientMsg::RequestAgent { resume: None, consent: false }).await.expect("send");
    let call_id = loop {
        match tokio::time::timeout(WAIT, s1.reader.recv::<HubMsg>()).await.expect("msg").expect("msg") {
            HubMsg::Connected { call_id, .. } => break call_id,
            _ => continue,
        }
    };
    // The agent must know the call before it can type into it.
    agent.wait_for("connected", |e| matches!(e, AgentEvent::Connected { .. })).await;
    s1.conn.close(quinn::VarInt::from_u32(0), b"cable pulled");
    hub.wait_status("kiosk gone", |s| s.connections == 1).await;
    agent.command(AgentCommand::Say("are you still there?".into())).await;
    agent.wait_for("text queued", |e| matches!(e, AgentEvent::TextSent { .. })).await;

    let mut s2 = client::connect(&ep, hub.addr(), "localhost", Role::Kiosk).await.expect("session again");
    s2.writer.send(&ClientMsg::RequestAgent { resume: Some(call_id), consent: false }).await.expect("send");
    let mut got_text = None;
    let mut connected = false;
    while got_text.is_none() || !connected {
        match tokio::time::timeout(WAIT, s2.reader.recv::<HubMsg>()).await.expect("msg").expect("msg") {
            HubMsg::Connected { call_id: c, .. } => {
                assert_eq!(c, call_id, "the same call resumes");
                connected = true;
            }
            HubMsg::Text { id, body, .. } => {
                assert_eq!(body, "are you still there?");
                got_text = Some(id);
            }
            _ => {}
        }
    }
    let id = got_text.expect("text");
    s2.writer.send(&ClientMsg::TextAck { call_id, id }).await.expect("ack");
    agent.wait_for("delivered", |e| matches!(e, AgentEvent::TextDelivered { id: i, .. } if *i == id)).await;

    // The kiosk sends its text twice (as after a lost ack): the agent shows it once.
    for _ in 0..2 {
        s2.writer.send(&ClientMsg::Text { call_id, id: 1, body: "yes, sorry".into() }).await.expect("send");
    }
    let mut acks = 0;
    while acks < 2 {
        if let HubMsg::TextAck { id: 1, .. } =
            tokio::time::timeout(WAIT, s2.reader.recv::<HubMsg>()).await.expect("msg").expect("msg")
        {
            acks += 1;
        }
    }
    agent.command(AgentCommand::HangUp).await;
    let mut shown = 0;
    while let AgentEvent::TextReceived { .. } = agent
        .wait_for("text or end", |e| matches!(e, AgentEvent::TextReceived { .. } | AgentEvent::Ended { .. }))
        .await
    {
        shown += 1;
    }
    assert_eq!(shown, 1, "a duplicate is never shown twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_survives_a_hub_restart() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("events.jsonl");
    for round in 1..=2u64 {
        let hub = start_hub_at(&pki, queue(10_000), log.clone()).await;
        let mut a = start_agent(&pki, hub.local_addr, "agent-1", Some(auto(Some(200))));
        a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
        let mut k = start_kiosk(&pki, hub.local_addr, "branch-6/kiosk-1");
        k.wait_state("idle", |s| *s == KioskState::Idle).await;
        k.panel.press(Button::Call);
        match k.wait_for("call id", |e| matches!(e, KioskEvent::CallId { .. })).await {
            KioskEvent::CallId { call_id, .. } => {
                assert_eq!(call_id, round, "call ids go on after a restart")
            }
            _ => unreachable!(),
        }
        k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
        let _ = k.stop.send(true);
        let _ = a.stop.send(true);
        let _ = k.task.await;
        let _ = a.task.await;
        hub.shutdown().await;
    }
    let text = std::fs::read_to_string(&log).expect("log");
    let report = kioskd::queue::LogSummary::from_lines(text.lines()).report();
    assert_eq!((report.calls, report.answered, report.abandoned, report.open), (2, 2, 0, 0));
    assert_eq!(text.lines().filter(|l| l.contains("\"hub_started\"")).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_serves_prometheus_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_at: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let hub = start_hub_full(&pki, queue(10_000), dir.path().join("events.jsonl"), Some(metrics_at)).await;
    let mut a = start_agent(&pki, hub.local_addr, "agent-1", Some(auto(Some(200))));
    a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut k = start_kiosk(&pki, hub.local_addr, "branch-7/kiosk-1");
    k.wait_state("idle", |s| *s == KioskState::Idle).await;
    k.panel.press(Button::Call);
    k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    let mut rx = hub.watch_status();
    tokio::time::timeout(WAIT, rx.wait_for(|s| s.stats.ended == 1)).await.expect("ended").expect("status");
    let addr = hub.metrics_addr.expect("metrics enabled");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: hub\r\n\r\n").await.expect("request");
    let mut body = String::new();
    tokio::time::timeout(WAIT, sock.read_to_string(&mut body)).await.expect("answer").expect("read");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for line in [
        "kioskd_hub_calls_answered_total 1",
        "kioskd_hub_calls_offered_total 1",
        "kioskd_hub_handle_seconds_count 1",
        "kioskd_hub_wait_seconds_count 1",
        "kioskd_hub_agents{state=\"IDLE\"} 1",
        "kioskd_hub_queue_length 0",
        "kioskd_hub_kiosk_connected{kiosk=\"branch-7/kiosk-1\"} 1",
        "kioskd_hub_kiosk_healthy{kiosk=\"branch-7/kiosk-1\"} 1",
        "kioskd_hub_kiosk_rtt_ms{kiosk=\"branch-7/kiosk-1\"}",
    ] {
        assert!(body.contains(line), "missing `{line}` in:\n{body}");
    }
}
