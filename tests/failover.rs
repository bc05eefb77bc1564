//! Kiosks and agents that know several hubs: when theirs dies (SIGKILL of a real `kioskd hub`
//! process), they move to the next one and take calls there. Real QUIC and mutual TLS on
//! 127.0.0.1, the deployment's certificates as `kioskd certs` writes them.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::postgres::Postgres;
use common::*;
use kioskd::call::{Button, KioskState};
use kioskd::edges::net::client::HubTarget;
use kioskd::edges::net::tls::{TlsMaterial, client_config};
use kioskd::edges::session::{MediaDevices, MediaOptions};
use kioskd::protocol::RoomState;
use kioskd::roles::agent::AgentEvent;
use kioskd::roles::kiosk::KioskEvent;
use tokio::time::Instant;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port").port()
}

/// A `kioskd hub` process on `port` (its own event log), started and listening.
fn spawn_hub(dir: &Path, name: &str, port: u16) -> Child {
    spawn_hub_with(dir, name, port, "hub.test", "")
}

/// A `kioskd hub` process with the certificate `cert` (its file stem) and `extra` lines of
/// configuration.
fn spawn_hub_with(dir: &Path, name: &str, port: u16, cert: &str, extra: &str) -> Child {
    spawn_hub_lines(dir, name, port, cert, extra).0
}

/// As [`spawn_hub_with`], with the hub's log lines (after "hub listening") for the test.
fn spawn_hub_lines(dir: &Path, name: &str, port: u16, cert: &str, extra: &str) -> (Child, Lines) {
    let d = dir.display();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nevent_log = \"{d}/{name}-events.jsonl\"\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/{cert}.pem\"\nkey = \"{d}/{cert}.key\"\n{extra}"
        ),
    )
    .expect("hub config");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_kioskd"))
            .args(["hub", "--config", config.to_str().expect("utf-8")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the hub"),
    );
    let lines = Lines::of(&mut child.0);
    lines.wait_for("hub listening");
    (child, lines)
}

fn target(dir: &Path, stem: &str, ports: &[u16]) -> HubTarget {
    let material = TlsMaterial::load(
        &dir.join("ca.pem"),
        &dir.join(format!("{stem}.pem")),
        &dir.join(format!("{stem}.key")),
    )
    .expect("certificates");
    HubTarget {
        addresses: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        server_name: "localhost".into(),
        client: client_config(&material).expect("client config"),
        silent: kioskd::edges::net::client::HUB_SILENT,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_and_agent_move_to_the_next_hub_when_theirs_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let mut hub_a = spawn_hub(dir.path(), "hub-a", port_a);
    let _hub_b = spawn_hub(dir.path(), "hub-b", port_b);

    let mut agent =
        start_agent_with(target(dir.path(), "agent-1", &[port_a, port_b]), "agent-1", Some(auto(Some(300))));
    agent.wait_for("IDLE on hub A", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let mut kiosk = start_kiosk_target(
        target(dir.path(), "branch-1_kiosk-1", &[port_a, port_b]),
        "branch-1/kiosk-1",
        MediaDevices::default(),
        MediaOptions::default(),
        Vec::new(),
    );
    kiosk.wait_for("up on hub A", |e| matches!(e, KioskEvent::HubUp { .. })).await;
    kiosk.wait_state("idle", |s| *s == KioskState::Idle).await;
    // Both are on hub A (the first listed): a call goes through it.
    kiosk.panel.press(Button::Call);
    kiosk.wait_state("ended on hub A", |s| matches!(s, KioskState::Ended { .. })).await;
    kiosk.wait_state("idle again", |s| *s == KioskState::Idle).await;
    let a_log = std::fs::read_to_string(dir.path().join("hub-a-events.jsonl")).expect("hub A's log");
    assert!(a_log.contains("\"connected\""), "the first call went through hub A: {a_log}");

    // Hub A dies.
    let killed = Instant::now();
    hub_a.0.kill().expect("SIGKILL hub A");
    let _ = hub_a.0.wait();
    kiosk.wait_for("down", |e| matches!(e, KioskEvent::HubDown { .. })).await;
    kiosk.wait_for("up on hub B", |e| matches!(e, KioskEvent::HubUp { .. })).await;
    let kiosk_back = killed.elapsed();
    agent.wait_for("welcomed by hub B", |e| matches!(e, AgentEvent::Welcome { .. })).await;
    agent.wait_for("IDLE on hub B", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let agent_back = killed.elapsed();
    println!(
        "{{\"failover\":\"hub killed\",\"kiosk_on_next_hub_ms\":{},\"agent_idle_on_next_hub_ms\":{}}}",
        kiosk_back.as_millis(),
        agent_back.as_millis()
    );

    // A call through hub B.
    kiosk.wait_state("idle", |s| *s == KioskState::Idle).await;
    kiosk.panel.press(Button::Call);
    kiosk.wait_state("in a call on hub B", |s| matches!(s, KioskState::Connected { .. })).await;
    kiosk.wait_state("ended on hub B", |s| matches!(s, KioskState::Ended { .. })).await;
    let b_log = std::fs::read_to_string(dir.path().join("hub-b-events.jsonl")).expect("hub B's log");
    assert!(b_log.contains("\"connected\""), "the second call went through hub B: {b_log}");

    let _ = kiosk.stop.send(true);
    let _ = agent.stop.send(true);
    let _ = tokio::time::timeout(WAIT, kiosk.task).await.expect("the kiosk stops");
    let done = tokio::time::timeout(WAIT, agent.task).await.expect("the agent stops");
    assert!(matches!(done, Ok(Ok(()))), "{done:?}");
    assert!(kiosk_back < Duration::from_secs(10) && agent_back < Duration::from_secs(10));
}

#[test]
fn doctor_warns_of_a_hub_that_is_gone_while_another_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    deployment(dir.path());
    let d = dir.path().display();
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let _hub_b = spawn_hub(dir.path(), "hub-b", port_b);
    let kiosk = dir.path().join("kiosk.toml");
    let write = |addresses: &str| {
        std::fs::write(
            &kiosk,
            format!(
                "[hub]\naddresses = [{addresses}]\nserver_name = \"localhost\"\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/branch-1_kiosk-1.pem\"\nkey = \"{d}/branch-1_kiosk-1.key\"\n[buttons]\nbackend = \"simulated\"\ninput = \"{d}/buttons.sock\"\n[camera]\nbackend = \"synthetic\"\n[audio]\ncapture = \"synthetic\"\n"
            ),
        )
        .expect("kiosk config");
    };
    write(&format!("\"127.0.0.1:{port_a}\", \"127.0.0.1:{port_b}\""));
    let o = kioskd_bin(&["doctor", "--config", kiosk.to_str().expect("utf-8")]);
    let text = output_text(&o);
    assert!(o.status.success(), "one hub answering is not a failure: {text}");
    assert!(text.contains(&format!("127.0.0.1:{port_b} answered")), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port_a}: no answer")) && text.contains("uses the other hubs"),
        "{text}"
    );

    write(&format!("\"127.0.0.1:{port_a}\""));
    let o = kioskd_bin(&["doctor", "--config", kiosk.to_str().expect("utf-8")]);
    assert!(!o.status.success(), "no hub answering is a failure: {}", output_text(&o));

    write(&format!("\"127.0.0.1:{port_b}\", \"127.0.0.1:{port_b}\""));
    let o = kioskd_bin(&["run", "--config", kiosk.to_str().expect("utf-8"), "--check"]);
    assert!(!o.status.success() && output_text(&o).contains("listed twice"), "{}", output_text(&o));
}

/// Issues a certificate in the deployment of `dir` (`kioskd certs issue` arguments).
fn issue(dir: &Path, args: &[&str]) {
    let mut all = vec!["certs", "issue", "--dir", dir.to_str().expect("utf-8")];
    all.extend(args);
    let o = kioskd_bin(&all);
    assert!(o.status.success(), "{}", output_text(&o));
}

/// The kiosks in the order hub B's event log shows them connected to an agent.
fn connected_order(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).expect("hub B's event log");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "connected")
        .filter_map(|v| v["kiosk"].as_str().map(str::to_string))
        .collect()
}

/// Polls the database until `sql` gives `want` (the hubs write it within a fraction of a
/// second); panics after [`WAIT`] saying what it was waiting for.
async fn until_db(pg: &Postgres, what: &str, sql: &str, want: &str) {
    let start = Instant::now();
    loop {
        let got = pg.try_psql(sql);
        if got.as_deref() == Some(want) {
            return;
        }
        if start.elapsed() >= WAIT {
            let rows = pg.try_psql(
                "SELECT kiosk, hub, call_id, joined_ms, updated_ms FROM waiting ORDER BY joined_ms",
            );
            let events = pg.try_psql("SELECT hub, seq, record::text FROM events ORDER BY id");
            panic!(
                "{what}: `{sql}` gave {got:?}, not {want:?} within {WAIT:?}\nwaiting: {rows:?}\nevents: {events:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The waiting callers as the database holds them: `kiosk@hub`, oldest first.
const WAITING: &str =
    "SELECT coalesce(string_agg(kiosk || '@' || hub, ',' ORDER BY joined_ms), '') FROM waiting";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_waiting_callers_keep_their_places_when_their_hub_is_killed() {
    callers_keep_their_places(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hubs_waiting_callers_keep_their_places_when_their_hub_is_killed() {
    callers_keep_their_places(3).await;
}

/// `hubs` hubs (A, B and perhaps C) on a real PostgreSQL; two callers wait on hub A, one on B.
/// A is killed: a surviving hub sees its lease expire and takes its callers over (B or C,
/// whichever locks it first), the kiosks move to B and keep their places ahead of B's own
/// caller, and an agent on B answers them in the order they first pressed the button.
async fn callers_keep_their_places(hubs: usize) {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    deployment(d);
    let names = ["hub-a", "hub-b", "hub-c"];
    // Each hub has its own identity: the database keeps every hub's events apart by it.
    for hub in &names[..hubs] {
        issue(d, &["--role", "hub", "--id", hub, "--dns", "localhost", "--ip", "127.0.0.1"]);
    }
    for k in ["branch-1/kiosk-2", "branch-2/kiosk-1", "branch-3/kiosk-1"] {
        issue(d, &["--role", "kiosk", "--id", k]);
    }
    let database = format!("[database]\nurl = \"{}\"\n", pg.url);
    let ports: Vec<u16> = (0..hubs).map(|_| free_udp_port()).collect();
    let mut procs: Vec<Child> =
        names[..hubs].iter().zip(&ports).map(|(n, p)| spawn_hub_with(d, n, *p, n, &database)).collect();
    let (port_a, port_b) = (ports[0], ports[1]);
    until_db(
        &pg,
        "every hub holds its lease",
        "SELECT count(*) FROM hubs WHERE lease_until > now()",
        &hubs.to_string(),
    )
    .await;

    // Two customers wait on hub A (no agent there), then one on hub B.
    let kiosk = |stem: &str, id: &str, ports: &[u16]| {
        start_kiosk_target(
            target(d, stem, ports),
            id,
            MediaDevices::default(),
            MediaOptions::default(),
            Vec::new(),
        )
    };
    let mut k1 = kiosk("branch-1_kiosk-1", "branch-1/kiosk-1", &[port_a, port_b]);
    let mut k2 = kiosk("branch-1_kiosk-2", "branch-1/kiosk-2", &[port_a, port_b]);
    let mut k3 = kiosk("branch-2_kiosk-1", "branch-2/kiosk-1", &[port_b, port_a]);
    // A fourth knows only hub A: it does not move by itself, so its place is kept only by the
    // takeover (it never comes back, and is given up when its grace ends).
    let mut k4 = kiosk("branch-3_kiosk-1", "branch-3/kiosk-1", &[port_a]);
    for (i, (k, n)) in [(&mut k1, 1), (&mut k2, 2), (&mut k3, 1), (&mut k4, 3)].into_iter().enumerate() {
        k.wait_state("idle", |s| *s == KioskState::Idle).await;
        k.panel.press(Button::Call);
        k.wait_state("waiting", |s| matches!(s, KioskState::Waiting { position, .. } if *position == n))
            .await;
        // The next presses after this one is in the database: their order is beyond doubt
        // (times of joining are in milliseconds).
        until_db(&pg, "the caller in the database", "SELECT count(*) FROM waiting", &(i + 1).to_string())
            .await;
    }
    let before =
        "branch-1/kiosk-1@hub-a,branch-1/kiosk-2@hub-a,branch-2/kiosk-1@hub-b,branch-3/kiosk-1@hub-a";
    until_db(&pg, "the queue in the database", WAITING, before).await;

    // Hub A dies. A surviving hub takes its callers over when its lease expires: in the
    // database, before their kiosks have noticed.
    let killed = Instant::now();
    let mut hub_a = procs.remove(0);
    hub_a.0.kill().expect("SIGKILL hub A");
    let _ = hub_a.0.wait();
    let start = Instant::now();
    let adopter = loop {
        let rows = pg.psql(WAITING);
        if !rows.contains("@hub-a") && rows.matches('@').count() == 4 {
            let order: Vec<&str> = rows.split(',').map(|r| r.split('@').next().unwrap_or("")).collect();
            assert_eq!(
                order,
                ["branch-1/kiosk-1", "branch-1/kiosk-2", "branch-2/kiosk-1", "branch-3/kiosk-1"],
                "{rows}\nevents: {}",
                pg.psql("SELECT hub, seq, record::text FROM events ORDER BY id")
            );
            break rows.rsplit(',').next().and_then(|r| r.split('@').nth(1)).unwrap_or("").to_string();
        }
        assert!(start.elapsed() < WAIT, "hub A's callers were not taken over within {WAIT:?}: {rows}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let taken_over = killed.elapsed();
    for k in [&mut k1, &mut k2] {
        k.wait_for("up on hub B", |e| matches!(e, KioskEvent::HubUp { .. })).await;
    }
    let moved = killed.elapsed();
    // Hub B's own caller goes from first to third once both have their places back (had they
    // asked afresh, they would be behind it).
    k3.wait_state("third on hub B", |s| matches!(s, KioskState::Waiting { position: 3, .. })).await;
    let restored = killed.elapsed();
    let after = format!(
        "branch-1/kiosk-1@hub-b,branch-1/kiosk-2@hub-b,branch-2/kiosk-1@hub-b,branch-3/kiosk-1@{adopter}"
    );
    until_db(&pg, "the callers on hub B", WAITING, &after).await;
    println!(
        "{{\"failover\":\"waiting callers\",\"hubs\":{hubs},\"taken_over_by\":\"{adopter}\",\"places_taken_over_ms\":{},\"callers_on_next_hub_ms\":{},\"places_restored_ms\":{}}}",
        taken_over.as_millis(),
        moved.as_millis(),
        restored.as_millis()
    );
    assert!(
        taken_over < Duration::from_secs(5),
        "hub A's callers were taken over {taken_over:?} after its death"
    );

    // An agent on hub B takes them in the order they first pressed the button.
    let agent = start_agent_with(target(d, "agent-1", &[port_b]), "agent-1", Some(auto(Some(200))));
    for k in [&mut k1, &mut k2, &mut k3] {
        k.wait_state("in the call", |s| matches!(s, KioskState::Connected { .. })).await;
        k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    }
    let order = connected_order(&d.join("hub-b-events.jsonl"));
    assert_eq!(order, ["branch-1/kiosk-1", "branch-1/kiosk-2", "branch-2/kiosk-1"]);
    let b_log = std::fs::read_to_string(d.join("hub-b-events.jsonl")).expect("hub B's log");
    let moved_in = b_log.matches("\"moved\":{").count();
    // k1 and k2 came from A (resumed, or taken over then resumed), and k4 if B took A over.
    let from_a = b_log.matches("\"moved\":{\"hub\":\"hub-a\"").count();
    assert_eq!(moved_in, if adopter == "hub-b" { 3 } else { 2 }, "{b_log}");
    assert!(from_a >= 1, "{b_log}");
    if adopter != "hub-b" {
        let c_log = std::fs::read_to_string(d.join("hub-c-events.jsonl")).expect("hub C's log");
        assert!(c_log.contains("\"moved\":{\"hub\":\"hub-a\""), "C took A's callers over: {c_log}");
    }

    // The deployment's report counts four calls: three answered (a moved caller is one call)
    // and k4's, abandoned when its grace ended on the hub that took it over.
    let ended = "SELECT count(*) FROM events WHERE hub = 'hub-b' AND record ->> 'event' = 'ended'";
    until_db(&pg, "hub B's calls in the database", ended, "3").await;
    until_db(&pg, "no caller left waiting", WAITING, "").await;
    let o = kioskd_bin(&["report", "--database", &pg.url]);
    assert!(o.status.success(), "{}", output_text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    assert_eq!((report["calls"].as_u64(), report["answered"].as_u64()), (Some(4), Some(3)), "{report}");
    assert_eq!((report["abandoned"].as_u64(), report["open"].as_u64()), (Some(1), Some(0)), "{report}");

    for k in [k1, k2, k3, k4] {
        let _ = k.stop.send(true);
        let _ = tokio::time::timeout(WAIT, k.task).await.expect("the kiosk stops");
    }
    let _ = agent.stop.send(true);
    let done = tokio::time::timeout(WAIT, agent.task).await.expect("the agent stops");
    assert!(matches!(done, Ok(Ok(()))), "{done:?}");
    drop(procs);
}

/// A screen that tells the test when each picture arrives.
struct SeenScreen(std::sync::mpsc::Sender<std::time::Instant>);

impl kioskd::edges::devices::screen::Screen for SeenScreen {
    fn show(&mut self, _pic: &kioskd::media::Picture) -> Result<(), kioskd::edges::devices::HwError> {
        let _ = self.0.send(std::time::Instant::now());
        Ok(())
    }
    fn describe(&self) -> String {
        "test screen".into()
    }
}

/// Synthetic camera and microphone, and a screen whose pictures come out of the receiver.
fn seen_devices(tone: f64) -> (MediaDevices, std::sync::mpsc::Receiver<std::time::Instant>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut devices = kioskd::edges::session::synthetic_devices(tone, Default::default());
    devices.screen = Some(std::sync::Arc::new(move || {
        Ok(Box::new(SeenScreen(tx.clone())) as Box<dyn kioskd::edges::devices::screen::Screen>)
    }));
    (devices, rx)
}

type Seen = std::sync::mpsc::Receiver<std::time::Instant>;

/// Waits (off the runtime's threads) for the first picture shown after `after`; gives the
/// receiver back.
async fn picture_after(rx: Seen, after: std::time::Instant) -> (std::time::Instant, Seen) {
    tokio::task::spawn_blocking(move || {
        loop {
            match rx.recv_timeout(WAIT) {
                Ok(t) if t > after => return (t, rx),
                Ok(_) => {}
                Err(e) => panic!("no picture within {WAIT:?}: {e}"),
            }
        }
    })
    .await
    .expect("the waiting thread")
}

/// A kiosk and an advisor (answering at once) that know the hubs on `ports`, in a call, with
/// pictures shown on both sides; with the receivers of the pictures each side shows after.
/// A call between kiosk-1 and agent-1 through the hubs on `ports`, pictures shown on both sides;
/// `consent`: the customer consented to recording.
async fn call_underway(d: &Path, ports: &[u16], consent: bool) -> (TestKiosk, TestAgent, Seen, Seen) {
    let (agent_devices, agent_seen) = seen_devices(660.0);
    let mut agent =
        start_agent_media(target(d, "agent-1", ports), "agent-1", Some(auto(None)), agent_devices);
    agent.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let (kiosk_devices, kiosk_seen) = seen_devices(440.0);
    let call = kioskd::call::CallConfig {
        ended_screen: Duration::from_millis(200),
        busy_screen: Duration::from_millis(500),
        recording_consent: consent,
    };
    let mut kiosk = start_kiosk_call(
        target(d, "branch-1_kiosk-1", ports),
        "branch-1/kiosk-1",
        kiosk_devices,
        MediaOptions::default(),
        Vec::new(),
        call,
    );
    kiosk.wait_state("idle", |s| *s == KioskState::Idle).await;
    kiosk.panel.press(Button::Call);
    kiosk.wait_state("in the call", |s| matches!(s, KioskState::Connected { .. })).await;
    let before = std::time::Instant::now();
    let ((_, kiosk_seen), (_, agent_seen)) =
        tokio::join!(picture_after(kiosk_seen, before), picture_after(agent_seen, before));
    (kiosk, agent, kiosk_seen, agent_seen)
}

/// How long after `gone_at` (the call's hub went away, and the advisor typed "still there?")
/// each side showed a picture again, in its new session (the old session's media stop with
/// it), and the advisor's text arrived: `(kiosk_media_ms, agent_media_ms, text_ms)`.
async fn media_back(
    kiosk: &mut TestKiosk,
    agent: &mut TestAgent,
    seen: (Seen, Seen),
    gone_at: std::time::Instant,
) -> (u128, u128, u128) {
    kiosk.wait_for("down", |e| matches!(e, KioskEvent::HubDown { .. })).await;
    kiosk.wait_for("up again", |e| matches!(e, KioskEvent::HubUp { .. })).await;
    let kiosk_up = std::time::Instant::now();
    agent.wait_for("welcomed again", |e| matches!(e, AgentEvent::Welcome { .. })).await;
    let agent_up = std::time::Instant::now();
    let ((kiosk_back, _k), (agent_back, _a)) =
        tokio::join!(picture_after(seen.0, kiosk_up), picture_after(seen.1, agent_up));
    kiosk
        .wait_for(
            "the advisor's text",
            |e| matches!(e, KioskEvent::TextReceived { body, .. } if body == "still there?"),
        )
        .await;
    let text_ms = gone_at.elapsed().as_millis();
    (kiosk_back.duration_since(gone_at).as_millis(), agent_back.duration_since(gone_at).as_millis(), text_ms)
}

/// The advisor hangs up; the text typed during the gap was shown once (it was shown before
/// this is called).
async fn hang_up_with_the_text_shown_once(kiosk: &mut TestKiosk, agent: &TestAgent) {
    agent.command(kioskd::roles::agent::AgentCommand::HangUp).await;
    let mut shown = 1;
    let ended = |e: &KioskEvent| {
        matches!(
            e,
            KioskEvent::TextReceived { .. } | KioskEvent::State { state: KioskState::Ended { .. }, .. }
        )
    };
    while let KioskEvent::TextReceived { .. } = kiosk.wait_for("the end", ended).await {
        shown += 1;
    }
    assert_eq!(shown, 1, "the text typed during the gap is shown once");
}

/// The deployment's report once `hub` stored the call's end: one call, answered, closed.
async fn one_call_answered(pg: &Postgres, hub: &str) {
    let ended = format!("SELECT count(*) FROM events WHERE hub = '{hub}' AND record ->> 'event' = 'ended'");
    until_db(pg, "the end in the database", &ended, "1").await;
    let o = kioskd_bin(&["report", "--database", &pg.url]);
    assert!(o.status.success(), "{}", output_text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    assert_eq!((report["calls"].as_u64(), report["answered"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["open"].as_u64(), Some(0), "{report}");
}

async fn stop_both(kiosk: TestKiosk, agent: TestAgent) {
    let _ = kiosk.stop.send(true);
    let _ = agent.stop.send(true);
    let _ = tokio::time::timeout(WAIT, kiosk.task).await.expect("the kiosk stops");
    let done = tokio::time::timeout(WAIT, agent.task).await.expect("the agent stops");
    assert!(matches!(done, Ok(Ok(()))), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_progress_goes_on_through_another_hub_when_its_hub_is_killed() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    deployment(d);
    for hub in ["hub-a", "hub-b"] {
        issue(d, &["--role", "hub", "--id", hub, "--dns", "localhost", "--ip", "127.0.0.1"]);
    }
    let database = format!("[database]\nurl = \"{}\"\n", pg.url);
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let mut hub_a = spawn_hub_with(d, "hub-a", port_a, "hub-a", &database);
    let _hub_b = spawn_hub_with(d, "hub-b", port_b, "hub-b", &database);
    until_db(&pg, "both hubs hold their leases", "SELECT count(*) FROM hubs WHERE lease_until > now()", "2")
        .await;
    let (mut kiosk, mut agent, kiosk_seen, agent_seen) = call_underway(d, &[port_a, port_b], false).await;
    until_db(
        &pg,
        "the call in the database",
        "SELECT string_agg(kiosk || '@' || hub, ',') FROM calls",
        "branch-1/kiosk-1@hub-a",
    )
    .await;

    // Hub A dies mid-call; the advisor types during the gap. Both move to hub B, and the call
    // goes on there.
    let killed_at = std::time::Instant::now();
    hub_a.0.kill().expect("SIGKILL hub A");
    let _ = hub_a.0.wait();
    agent.command(kioskd::roles::agent::AgentCommand::Say("still there?".into())).await;
    let (kiosk_media_ms, agent_media_ms, text_ms) =
        media_back(&mut kiosk, &mut agent, (kiosk_seen, agent_seen), killed_at).await;
    println!(
        "{{\"failover\":\"call in progress\",\"kiosk_media_back_ms\":{kiosk_media_ms},\"agent_media_back_ms\":{agent_media_ms},\"text_delivered_ms\":{text_ms}}}"
    );
    until_db(
        &pg,
        "the call on hub B",
        "SELECT string_agg(kiosk || '@' || hub, ',') FROM calls",
        "branch-1/kiosk-1@hub-b",
    )
    .await;
    let b_log = std::fs::read_to_string(d.join("hub-b-events.jsonl")).expect("hub B's log");
    assert!(b_log.contains("\"event\":\"resumed\""), "{b_log}");

    // The deployment's report: one call, answered, handled from its first answer to its end.
    hang_up_with_the_text_shown_once(&mut kiosk, &agent).await;
    one_call_answered(&pg, "hub-b").await;
    stop_both(kiosk, agent).await;
    assert!(
        kiosk_media_ms < 5_000 && agent_media_ms < 5_000,
        "media back {kiosk_media_ms} / {agent_media_ms} ms after the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_progress_goes_on_when_its_only_hub_is_killed_and_started_again() {
    call_across_a_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_progress_goes_on_when_its_only_hub_is_stopped_and_started_again() {
    call_across_a_restart(true).await;
}

/// The hub of a call in progress (with the database) stops, by SIGTERM (`graceful`, as
/// `systemctl restart` does) or SIGKILL, and is started again on the same address.
async fn call_across_a_restart(graceful: bool) {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    deployment(d);
    issue(d, &["--role", "hub", "--id", "hub-a", "--dns", "localhost", "--ip", "127.0.0.1"]);
    // The hub records calls: the call is recorded before the restart and again after it.
    let database = format!(
        "[database]\nurl = \"{}\"\n[recording]\nenabled = true\ndir = \"{}/recordings\"\nretention_days = 90\n",
        pg.url,
        d.display()
    );
    let port = free_udp_port();
    let mut hub = spawn_hub_with(d, "hub-a", port, "hub-a", &database);
    until_db(&pg, "the hub holds its lease", "SELECT count(*) FROM hubs WHERE lease_until > now()", "1")
        .await;
    let (mut kiosk, mut agent, kiosk_seen, agent_seen) = call_underway(d, &[port], true).await;
    until_db(&pg, "the call in the database", "SELECT string_agg(kiosk, ',') FROM calls", "branch-1/kiosk-1")
        .await;

    // The hub stops mid-call and is started again on the same address; the advisor types
    // during the gap. Kiosk and advisor resume the call there under its number.
    let first = pg.psql("SELECT instance FROM hubs WHERE hub = 'hub-a'");
    assert_eq!(first.len(), 16, "a process holds the lease: {first:?}");
    let killed_at = std::time::Instant::now();
    if graceful {
        let pid = libc::pid_t::try_from(hub.0.id()).expect("a pid");
        // SAFETY: kill(2) on the hub's own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM the hub");
        let status = hub.0.wait().expect("the hub exits");
        assert!(status.success(), "{status:?}");
    } else {
        hub.0.kill().expect("SIGKILL the hub");
        let _ = hub.0.wait();
    }
    // A clean stop released the lease (its time kept, for the other hubs); a killed process
    // still holds it.
    let released = pg.psql("SELECT instance = '' AND lease_until > now() - interval '1 hour' FROM hubs");
    assert_eq!(released, if graceful { "t" } else { "f" }, "lease released at the stop: {released}");
    agent.command(kioskd::roles::agent::AgentCommand::Say("still there?".into())).await;
    let restarted_at = Instant::now();
    let (_restarted, restarted_lines) = spawn_hub_lines(d, "hub-a", port, "hub-a", &database);
    let started_ms = killed_at.elapsed().as_millis();
    let (kiosk_media_ms, agent_media_ms, text_ms) =
        media_back(&mut kiosk, &mut agent, (kiosk_seen, agent_seen), killed_at).await;
    // The restarted process holds the lease: at once after a clean stop, after a kill once
    // the killed process's lease has expired. Looked for once the media is back, so that the
    // figure is an upper bound.
    let taken =
        format!("SELECT count(*) FROM hubs WHERE instance NOT IN ('', '{first}') AND lease_until > now()");
    until_db(&pg, "the restarted hub holds the lease", &taken, "1").await;
    let lease_ms = restarted_at.elapsed().as_millis();
    println!(
        "{{\"failover\":\"hub restart mid-call\",\"graceful\":{graceful},\"hub_listening_ms\":{started_ms},\"kiosk_media_back_ms\":{kiosk_media_ms},\"agent_media_back_ms\":{agent_media_ms},\"text_delivered_ms\":{text_ms},\"lease_held_within_ms\":{lease_ms}}}"
    );
    // The restart held the call for both (logged), and nothing ended it; a stop said so.
    let log = std::fs::read_to_string(d.join("hub-a-events.jsonl")).expect("the hub's log");
    assert_eq!(log.contains("calls_held=1"), graceful, "{log}");
    let held = log.lines().filter(|l| l.contains("\"kiosk_away\"") && l.contains("hub_restart")).count();
    assert_eq!(held, 1, "{log}");
    assert!(!log.contains("\"event\":\"ended\""), "{log}");

    hang_up_with_the_text_shown_once(&mut kiosk, &agent).await;
    // The restarted hub recorded the rest of the call in a file of its own, with both sides.
    let finished = restarted_lines.wait_for("recording finished");
    assert!(finished.contains("call-1-2.mkv"), "{finished}");
    let second = std::fs::metadata(d.join("recordings/call-1-2.mkv")).expect("the second recording").len();
    assert!(second > 10_000, "the recording after the restart holds {second} bytes");
    assert!(d.join("recordings/call-1.mkv").exists(), "the recording before the restart is kept");
    one_call_answered(&pg, "hub-a").await;
    stop_both(kiosk, agent).await;
    assert!(
        kiosk_media_ms < 5_000 && agent_media_ms < 5_000,
        "media back {kiosk_media_ms} / {agent_media_ms} ms after the kill"
    );
}

/// A TCP path to the database that the test can cut (every connection through it dropped,
/// new ones refused) and mend.
struct DbPath {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl DbPath {
    async fn to(db_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue; // dropped: refused while cut
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", db_port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_cut_off_from_the_database_stops_offering_within_its_lease() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    deployment(d);
    for hub in ["hub-a", "hub-b"] {
        issue(d, &["--role", "hub", "--id", hub, "--dns", "localhost", "--ip", "127.0.0.1"]);
    }
    let db_port: u16 = pg
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the port");
    let path = DbPath::to(db_port).await;
    let via_path = pg.url.replace(&format!(":{db_port}/"), &format!(":{}/", path.port));
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let (_hub_a, a_lines) =
        spawn_hub_lines(d, "hub-a", port_a, "hub-a", &format!("[database]\nurl = \"{via_path}\"\n"));
    let _hub_b = spawn_hub_with(d, "hub-b", port_b, "hub-b", &format!("[database]\nurl = \"{}\"\n", pg.url));
    until_db(&pg, "both hubs hold their leases", "SELECT count(*) FROM hubs WHERE lease_until > now()", "2")
        .await;

    // A customer waits on hub A (the only hub its kiosk knows).
    let mut kiosk = start_kiosk_target(
        target(d, "branch-1_kiosk-1", &[port_a]),
        "branch-1/kiosk-1",
        MediaDevices::default(),
        MediaOptions::default(),
        Vec::new(),
    );
    kiosk.wait_state("idle", |s| *s == KioskState::Idle).await;
    kiosk.panel.press(Button::Call);
    kiosk.wait_state("waiting", |s| matches!(s, KioskState::Waiting { .. })).await;
    until_db(&pg, "the caller in the database", WAITING, "branch-1/kiosk-1@hub-a").await;

    // Hub A loses its path to the database: it gives up its lease before it expires, and hub B
    // sees it expire and takes the caller over (held as away: its kiosk is still on A).
    let cut_at = std::time::Instant::now();
    let _ = path.cut.send(true);
    let lines = tokio::task::spawn_blocking(move || {
        a_lines.wait_for("lease lost");
        (a_lines, std::time::Instant::now())
    });
    let (a_lines, lost_at) = lines.await.expect("the log reader");
    let lease_lost_ms = lost_at.duration_since(cut_at).as_millis();
    until_db(&pg, "hub B took the caller over", WAITING, "branch-1/kiosk-1@hub-b").await;
    let taken_over_ms = cut_at.elapsed().as_millis();
    assert!(
        lease_lost_ms < 3_000,
        "hub A kept its lease {lease_lost_ms} ms after losing the database (the lease is 3 s)"
    );

    // An advisor on hub A goes IDLE: no offer while A has no lease.
    let mut agent = start_agent_with(target(d, "agent-1", &[port_a]), "agent-1", Some(auto(Some(300))));
    agent.wait_for("IDLE on hub A", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;

    // The path mends: A takes its lease again, then offers; B drops its copy.
    let mended_at = Instant::now();
    let _ = path.cut.send(false);
    let offered = agent
        .wait_for("the offer", |e| matches!(e, AgentEvent::Offer { .. } | AgentEvent::Connected { .. }))
        .await;
    assert!(matches!(offered, AgentEvent::Offer { .. }), "an offer first: {offered:?}");
    let offer_after_mend_ms = mended_at.elapsed().as_millis();
    tokio::task::spawn_blocking(move || a_lines.wait_for("waiting callers are its own again"))
        .await
        .expect("log");
    kiosk.wait_state("in the call", |s| matches!(s, KioskState::Connected { .. })).await;
    kiosk.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    println!(
        "{{\"partition\":\"hub A cut off from the database\",\"lease_lost_ms\":{lease_lost_ms},\"taken_over_ms\":{taken_over_ms},\"offer_after_mend_ms\":{offer_after_mend_ms}}}"
    );
    let released = "SELECT count(*) FROM events WHERE hub = 'hub-b' AND record ->> 'detail' = 'moved'";
    until_db(&pg, "hub B let the caller go", released, "1").await;
    until_db(&pg, "nobody waiting", WAITING, "").await;
    let ended = "SELECT count(*) FROM events WHERE hub = 'hub-a' AND record ->> 'event' = 'ended'";
    until_db(&pg, "the call's end in the database", ended, "1").await;
    let o = kioskd_bin(&["report", "--database", &pg.url]);
    assert!(o.status.success(), "{}", output_text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    assert_eq!((report["calls"].as_u64(), report["answered"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!((report["abandoned"].as_u64(), report["open"].as_u64()), (Some(0), Some(0)), "{report}");

    let _ = kiosk.stop.send(true);
    let _ = agent.stop.send(true);
    let _ = tokio::time::timeout(WAIT, kiosk.task).await.expect("the kiosk stops");
    let _ = tokio::time::timeout(WAIT, agent.task).await.expect("the agent stops");
}

/// Polls until the database holds as many of `hub`'s events as its event log file (both read
/// afresh each time: the hub may still be writing).
async fn until_shipped(pg: &Postgres, hub: &str, log: &Path) {
    let start = Instant::now();
    let sql = format!("SELECT count(*) FROM events WHERE hub = '{hub}'");
    loop {
        let stored = pg.try_psql(&sql);
        let lines = std::fs::read_to_string(log).expect("the event log").lines().count().to_string();
        if stored.as_deref() == Some(lines.as_str()) {
            return;
        }
        assert!(start.elapsed() < WAIT, "{hub}: {stored:?} events in the database, {lines} in {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every offer an agent has been sent so far (its events up to now, the others dropped).
fn offers_so_far(agent: &mut TestAgent) -> usize {
    let mut offers = 0;
    while let Ok(e) = agent.events.try_recv() {
        offers += usize::from(matches!(e, AgentEvent::Offer { .. } | AgentEvent::Connected { .. }));
    }
    offers
}

/// The database stops mid-queue (longer than a lease) and starts again. Both hubs give their
/// leases up and make no offers meanwhile, but keep what they have: the call in progress goes
/// on (pictures flow while the database is down) and the waiting callers keep their places.
/// When it is back, neither hub takes the other's callers (both leases had expired: a hub
/// takes over only after holding its own for a whole lease), the queues go on where they
/// were, and every event of the gap reaches the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarting_mid_queue_leaves_calls_and_places_where_they_were() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    deployment(d);
    for hub in ["hub-a", "hub-b"] {
        issue(d, &["--role", "hub", "--id", hub, "--dns", "localhost", "--ip", "127.0.0.1"]);
    }
    issue(d, &["--role", "agent", "--id", "agent-2"]);
    for k in ["branch-1/kiosk-2", "branch-2/kiosk-1"] {
        issue(d, &["--role", "kiosk", "--id", k]);
    }
    let database = format!("[database]\nurl = \"{}\"\n", pg.url);
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let (_hub_a, a_lines) = spawn_hub_lines(d, "hub-a", port_a, "hub-a", &database);
    let (_hub_b, b_lines) = spawn_hub_lines(d, "hub-b", port_b, "hub-b", &database);
    until_db(&pg, "both hubs hold their leases", "SELECT count(*) FROM hubs WHERE lease_until > now()", "2")
        .await;

    // A call in progress on hub A; a second caller waits there behind it, a third on hub B
    // (no advisor there yet).
    let (agent_devices, _agent_seen) = seen_devices(660.0);
    let mut agent_1 =
        start_agent_media(target(d, "agent-1", &[port_a]), "agent-1", Some(auto(None)), agent_devices);
    agent_1.wait_for("IDLE on hub A", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    let (kiosk_devices, kiosk_seen) = seen_devices(440.0);
    let mut k1 = start_kiosk_target(
        target(d, "branch-1_kiosk-1", &[port_a]),
        "branch-1/kiosk-1",
        kiosk_devices,
        MediaOptions::default(),
        Vec::new(),
    );
    k1.wait_state("idle", |s| *s == KioskState::Idle).await;
    k1.panel.press(Button::Call);
    k1.wait_state("in the call on hub A", |s| matches!(s, KioskState::Connected { .. })).await;
    let kiosk = |stem: &str, id: &str, port: u16| {
        start_kiosk_target(
            target(d, stem, &[port]),
            id,
            MediaDevices::default(),
            MediaOptions::default(),
            Vec::new(),
        )
    };
    let mut k2 = kiosk("branch-1_kiosk-2", "branch-1/kiosk-2", port_a);
    let mut k3 = kiosk("branch-2_kiosk-1", "branch-2/kiosk-1", port_b);
    for k in [&mut k2, &mut k3] {
        k.wait_state("idle", |s| *s == KioskState::Idle).await;
        k.panel.press(Button::Call);
        k.wait_state("first in line", |s| matches!(s, KioskState::Waiting { position: 1, .. })).await;
    }
    until_db(&pg, "the callers in the database", WAITING, "branch-1/kiosk-2@hub-a,branch-2/kiosk-1@hub-b")
        .await;

    // The database stops. Both hubs give their leases up.
    let stopped = std::time::Instant::now();
    pg.stop_server();
    let (a_lines, b_lines) = tokio::task::spawn_blocking(move || {
        a_lines.wait_for("lease lost");
        b_lines.wait_for("lease lost");
        (a_lines, b_lines)
    })
    .await
    .expect("the log readers");
    let leases_lost_ms = stopped.elapsed().as_millis();

    // The call goes on: pictures reach the kiosk after both hubs lost their leases.
    let lost = std::time::Instant::now();
    let (_, _kiosk_seen) = picture_after(kiosk_seen, lost).await;
    // An advisor comes to hub B, and the one on A hangs up: both are IDLE with a caller
    // waiting on their hub, and neither is offered one without a lease.
    let mut agent_2 = start_agent_with(target(d, "agent-2", &[port_b]), "agent-2", Some(auto(Some(200))));
    agent_2.wait_for("IDLE on hub B", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    agent_1.command(kioskd::roles::agent::AgentCommand::HangUp).await;
    k1.wait_state("the call ended", |s| matches!(s, KioskState::Ended { .. })).await;
    agent_1.wait_for("IDLE on hub A", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
    assert_eq!(offers_so_far(&mut agent_1), 0, "hub A offered a caller without its lease");
    assert_eq!(offers_so_far(&mut agent_2), 0, "hub B offered a caller without its lease");
    for k in [&mut k2, &mut k3] {
        while let Ok(e) = k.events.try_recv() {
            if let KioskEvent::State { state, .. } = e {
                assert!(matches!(state, KioskState::Waiting { .. }), "{state:?} while the database was down");
            }
        }
    }

    // The database is back: each hub takes its own lease again, then offers its own caller.
    // Both leases have expired by the database's clock (their last renewal was before the
    // stop; a lease lasts 3 s): what the test is about is the database coming back to find
    // every hub's lease expired. The condition is time itself, hence waited on as such.
    tokio::time::sleep_until(
        (stopped + kioskd::edges::db::cluster::LEASE + Duration::from_millis(500)).into(),
    )
    .await;
    let down_ms = stopped.elapsed().as_millis();
    pg.start_server();
    let restarted = Instant::now();
    tokio::task::spawn_blocking(move || {
        a_lines.wait_for("holding this hub's lease");
        b_lines.wait_for("holding this hub's lease");
    })
    .await
    .expect("the log readers");
    let leases_back_ms = restarted.elapsed().as_millis();
    for (agent, k) in [(&mut agent_1, &mut k2), (&mut agent_2, &mut k3)] {
        agent.wait_for("the offer", |e| matches!(e, AgentEvent::Offer { .. })).await;
        k.wait_state("in the call", |s| matches!(s, KioskState::Connected { .. })).await;
    }
    let offers_back_ms = restarted.elapsed().as_millis();
    agent_1.command(kioskd::roles::agent::AgentCommand::HangUp).await;
    for k in [&mut k2, &mut k3] {
        k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    }
    println!(
        "{{\"database_restart\":\"mid-queue\",\"leases_lost_ms\":{leases_lost_ms},\"database_down_ms\":{down_ms},\"leases_back_ms\":{leases_back_ms},\"offers_back_ms\":{offers_back_ms}}}"
    );

    // Nobody was taken over or let go, and every event of the gap reached the database.
    let moved = "SELECT count(*) FROM events WHERE record ? 'moved' OR record ->> 'detail' = 'moved'";
    until_db(&pg, "nobody waiting", WAITING, "").await;
    for hub in ["hub-a", "hub-b"] {
        let ended =
            format!("SELECT count(*) FROM events WHERE hub = '{hub}' AND record ->> 'event' = 'ended'");
        until_db(&pg, "the calls' ends in the database", &ended, if hub == "hub-a" { "2" } else { "1" })
            .await;
        until_shipped(&pg, hub, &d.join(format!("{hub}-events.jsonl"))).await;
    }
    assert_eq!(pg.psql(moved), "0", "a caller was moved: {}", pg.psql("SELECT record::text FROM events"));
    let o = kioskd_bin(&["report", "--database", &pg.url]);
    assert!(o.status.success(), "{}", output_text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    assert_eq!((report["calls"].as_u64(), report["answered"].as_u64()), (Some(3), Some(3)), "{report}");
    assert_eq!((report["abandoned"].as_u64(), report["open"].as_u64()), (Some(0), Some(0)), "{report}");

    for k in [k1, k2, k3] {
        let _ = k.stop.send(true);
        let _ = tokio::time::timeout(WAIT, k.task).await.expect("the kiosk stops");
    }
    for a in [agent_1, agent_2] {
        let _ = a.stop.send(true);
        let _ = tokio::time::timeout(WAIT, a.task).await.expect("the agent stops");
    }
}

/// Three hubs: two customers wait on hub A, which has no advisor; one advisor is free on hub
/// B and one on hub C. Each of B and C takes one caller from the database (the longest
/// waiting that another hub has not locked), hub A sends the kiosk there (`move_to`), and the
/// caller is answered: each customer offered once in the whole deployment, each keeping its place
/// from hub A, and the report counts two calls answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_a_hub_without_a_free_advisor_are_answered_on_hubs_with_one() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    deployment(d);
    for hub in ["hub-a", "hub-b", "hub-c"] {
        issue(d, &["--role", "hub", "--id", hub, "--dns", "localhost", "--ip", "127.0.0.1"]);
    }
    issue(d, &["--role", "agent", "--id", "agent-2"]);
    issue(d, &["--role", "kiosk", "--id", "branch-1/kiosk-2"]);
    let database = format!("[database]\nurl = \"{}\"\n", pg.url);
    let ports: Vec<u16> = (0..3).map(|_| free_udp_port()).collect();
    let _hubs: Vec<Child> = ["hub-a", "hub-b", "hub-c"]
        .iter()
        .zip(&ports)
        .map(|(n, p)| spawn_hub_with(d, n, *p, n, &database))
        .collect();
    until_db(&pg, "every hub holds its lease", "SELECT count(*) FROM hubs WHERE lease_until > now()", "3")
        .await;

    // An advisor on each of B and C, IDLE; they stay in the call they take.
    let mut agents = Vec::new();
    for (id, port) in [("agent-1", ports[1]), ("agent-2", ports[2])] {
        let mut a = start_agent_with(target(d, id, &[port]), id, Some(auto(None)));
        a.wait_for("IDLE", |e| matches!(e, AgentEvent::Room { state: RoomState::Idle, .. })).await;
        agents.push(a);
    }
    until_db(&pg, "both rooms IDLE", "SELECT count(*) FROM rooms WHERE state = 'IDLE'", "2").await;

    // Two customers on hub A (the only hub their kiosks know).
    let mut kiosks = Vec::new();
    for (stem, id) in [("branch-1_kiosk-1", "branch-1/kiosk-1"), ("branch-1_kiosk-2", "branch-1/kiosk-2")] {
        let mut k = start_kiosk_target(
            target(d, stem, &[ports[0]]),
            id,
            MediaDevices::default(),
            MediaOptions::default(),
            Vec::new(),
        );
        k.wait_state("idle", |s| *s == KioskState::Idle).await;
        kiosks.push(k);
    }
    let pressed = Instant::now();
    let mut answered_ms = Vec::new();
    for k in kiosks.iter_mut() {
        k.panel.press(Button::Call);
        k.wait_state("waiting", |s| matches!(s, KioskState::Waiting { .. })).await;
    }
    for k in kiosks.iter_mut() {
        k.wait_for("moved to another hub", |e| matches!(e, KioskEvent::HubUp { .. })).await;
        k.wait_state("in the call", |s| matches!(s, KioskState::Connected { .. })).await;
        answered_ms.push(pressed.elapsed().as_millis());
    }
    println!(
        "{{\"cross_hub\":\"callers on a hub without a free advisor\",\"hubs\":3,\"answered_after_press_ms\":{answered_ms:?}}}"
    );

    // Each customer was offered once in the whole deployment, and B and C took one each.
    until_db(&pg, "both calls in the database", "SELECT count(*) FROM calls", "2").await;
    let offers = "SELECT string_agg(record ->> 'kiosk' || '@' || hub, ',' ORDER BY record ->> 'kiosk')
                    FROM events WHERE record ->> 'event' = 'offered'";
    let got = pg.psql(offers);
    let mut on: Vec<&str> = got.split(',').collect();
    assert_eq!(on.len(), 2, "{got}");
    assert!(on[0].starts_with("branch-1/kiosk-1@") && on[1].starts_with("branch-1/kiosk-2@"), "{got}");
    on.sort_by_key(|s| s.rsplit('@').next().map(str::to_string));
    let hubs: Vec<&str> = on.iter().filter_map(|s| s.rsplit('@').next()).collect();
    assert_eq!(hubs, ["hub-b", "hub-c"], "one caller on each hub with an advisor: {got}");
    // Each kept its place from hub A: the hub that took it counts its wait from the press.
    let joined =
        "SELECT string_agg((e.record -> 'moved' ->> 'joined_ms') || '=' || (a.record ->> 'ts_ms'), ',')
                    FROM events e JOIN events a ON a.hub = 'hub-a' AND a.record ->> 'event' = 'queued'
                     AND a.record ->> 'kiosk' = e.record ->> 'kiosk'
                   WHERE e.hub <> 'hub-a' AND e.record ->> 'event' = 'queued'";
    let pairs = pg.psql(joined);
    assert!(
        pairs.split(',').count() >= 2
            && pairs.split(',').all(|p| p.split_once('=').is_some_and(|(x, y)| x == y)),
        "{pairs}"
    );
    let moved = "SELECT count(*) FROM events WHERE hub = 'hub-a' AND record ->> 'detail' = 'moved'";
    assert_eq!(pg.psql(moved), "2");

    for k in kiosks.iter_mut() {
        k.panel.press(Button::HangUp);
        k.wait_state("ended", |s| matches!(s, KioskState::Ended { .. })).await;
    }
    until_db(&pg, "nobody waiting", WAITING, "").await;
    let ended = "SELECT count(*) FROM events WHERE record ->> 'event' = 'ended'";
    until_db(&pg, "both ends in the database", ended, "2").await;
    let o = kioskd_bin(&["report", "--database", &pg.url]);
    assert!(o.status.success(), "{}", output_text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    assert_eq!((report["calls"].as_u64(), report["answered"].as_u64()), (Some(2), Some(2)), "{report}");
    assert_eq!((report["abandoned"].as_u64(), report["open"].as_u64()), (Some(0), Some(0)), "{report}");

    for k in kiosks {
        let _ = k.stop.send(true);
        let _ = tokio::time::timeout(WAIT, k.task).await.expect("the kiosk stops");
    }
    for a in agents {
        let _ = a.stop.send(true);
        let _ = tokio::time::timeout(WAIT, a.task).await.expect("the agent stops");
    }
}
