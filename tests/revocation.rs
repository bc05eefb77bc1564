//! Revocation: `kioskd certs revoke` locks a stolen kiosk or a departed advisor out. The hub
//! follows its revocation list: a revoked certificate is refused at the next handshake, and a
//! connected peer it names is disconnected within 5 s (its call ends for the other side),
//! while other calls go on.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kioskd::call::{Button, KioskState};
use kioskd::edges::net::tls::serial_of;
use kioskd::edges::session::MediaDevices;
use kioskd::protocol::{Role, RoomState};
use kioskd::queue::QueueConfig;
use kioskd::roles::agent::AgentEvent;

/// Waits until the agent's session has ended (its events stop).
async fn wait_gone(a: &mut TestAgent) {
    tokio::time::timeout(WAIT, async { while a.events.recv().await.is_some() {} })
        .await
        .expect("the agent's session ends");
}

/// Writes a revocation list naming `serials`, as `kioskd certs revoke` does (atomically).
fn write_crl(pki: &Pki, path: &std::path::Path, serials: &[Vec<u8>], number: u64) {
    let pem = pki.ca.revocation_list(serials, number).expect("CRL");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pem).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_kiosk_is_cut_off_and_refused_and_other_calls_go_on() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let crl = dir.path().join("crl.pem");
    write_crl(&pki, &crl, &[], 1);
    let log = dir.path().join("events.jsonl");
    let hub = start_hub_revoking(&pki, QueueConfig::default(), log.clone(), None, Some(crl.clone())).await;
    let addr = hub.local_addr;

    // Two calls: the stolen kiosk's (with agent-1), and another (agent-2) that must not notice.
    let stolen = pki.material(Role::Kiosk, "branch-1/kiosk-1");
    let serial = serial_of(&stolen.chain[0]).expect("serial");
    let mut a1 = start_agent(&pki, addr, "agent-1", Some(auto(None)));
    a1.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let target = Pki::target_of(addr, &stolen);
    let mut k1 =
        start_kiosk_target(target, "branch-1/kiosk-1", MediaDevices::default(), Default::default(), vec![]);
    k1.wait_state("idle", |s| *s == KioskState::Idle).await;
    k1.panel.press(Button::Call);
    a1.wait_for("call 1", |e| matches!(e, AgentEvent::Connected { .. })).await;
    let mut a2 = start_agent(&pki, addr, "agent-2", Some(auto(None)));
    a2.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut k2 = start_kiosk(&pki, addr, "branch-1/kiosk-2");
    k2.wait_state("idle", |s| *s == KioskState::Idle).await;
    k2.panel.press(Button::Call);
    a2.wait_for("call 2", |e| matches!(e, AgentEvent::Connected { .. })).await;
    let mut status = hub.watch_status();
    let refused_before = hub.status().refused;

    // Revoked: the hub follows the file.
    let revoked_at = Instant::now();
    write_crl(&pki, &crl, std::slice::from_ref(&serial), 2);
    tokio::time::timeout(WAIT, status.wait_for(|s| s.revoked == 1)).await.expect("revoked").expect("status");
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(5), "disconnected {took:?} after the revocation");
    a1.wait_for("the stolen kiosk's call ends", |e| matches!(e, AgentEvent::Ended { .. })).await;
    tokio::time::timeout(WAIT, status.wait_for(|s| s.snapshot.calls_connected == 1))
        .await
        .expect("one call left")
        .expect("status");

    // Its reconnects are refused at the handshake; the other call goes on.
    tokio::time::timeout(WAIT, status.wait_for(|s| s.refused > refused_before))
        .await
        .expect("refused")
        .expect("status");
    assert_eq!(hub.status().snapshot.calls_connected, 1, "the other call goes on");
    while let Ok(e) = a2.events.try_recv() {
        assert!(!matches!(e, AgentEvent::Ended { .. }), "the other call ended: {e:?}");
    }
    drop(k2);

    let events = std::fs::read_to_string(&log).expect("event log");
    let line = events.lines().find(|l| l.contains("\"revoked\"")).expect("a revoked event");
    assert!(
        line.contains("branch-1/kiosk-1") && line.contains(&kioskd::edges::net::certs::hex(&serial)),
        "{line}"
    );
    println!("revocation: the kiosk was disconnected {took:?} after the list changed");
}

/// A reload (what SIGHUP does) applies a list at once; a departed advisor's certificate is
/// refused from then on, and a list that cannot be read keeps the last one in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_locks_out_a_departed_advisor_and_a_bad_list_changes_nothing() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let crl = dir.path().join("crl.pem");
    let departed = pki.material(Role::Agent, "agent-9");
    let serial = serial_of(&departed.chain[0]).expect("serial");
    write_crl(&pki, &crl, &[], 1);
    let log = dir.path().join("events.jsonl");
    let hub = start_hub_revoking(&pki, QueueConfig::default(), log.clone(), None, Some(crl.clone())).await;
    let mut a = start_agent_with(Pki::target_of(hub.local_addr, &departed), "agent-9", None);
    a.wait_for("CLOSE", |e| matches!(e, AgentEvent::Room { state: RoomState::Close, .. })).await;

    // Written in place (no rename), then reloaded at once.
    std::fs::write(&crl, pki.ca.revocation_list(std::slice::from_ref(&serial), 2).expect("CRL"))
        .expect("write");
    hub.reload_revocations();
    let mut status = hub.watch_status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.revoked == 1)).await.expect("revoked").expect("status");
    wait_gone(&mut a).await;

    // Garbage in the file: the list in force stays, the advisor stays out.
    std::fs::write(&crl, "not a revocation list").expect("write");
    hub.reload_revocations();
    let refused = hub.status().refused;
    let mut again = start_agent_with(Pki::target_of(hub.local_addr, &departed), "agent-9", None);
    tokio::time::timeout(WAIT, status.wait_for(|s| s.refused > refused))
        .await
        .expect("refused")
        .expect("status");
    wait_gone(&mut again).await;
    let events = std::fs::read_to_string(&log).expect("event log");
    assert!(events.lines().any(|l| l.contains("\"revoked\"") && l.contains("agent-9")), "{events}");
}
