//! Tests of the hub's queue core on a fake clock: one `Instant::now()` as `t0`, every other
//! time `t0 + d`. A [`Hub`] feeds inputs, drains the outputs to `Wait` and keeps every event
//! the core logged, so a scenario can also be replayed as an event log.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use super::*;

/// The event log's wall clock at `t0`.
const T0_UNIX_MS: u64 = 1_700_000_000_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ----- reading outputs -----

/// Polls until `Wait`, which is the last element.
fn drain(q: &mut AgentQueue) -> Vec<Output> {
    let mut outs = Vec::new();
    loop {
        let out = q.poll_output();
        let done = matches!(out, Output::Wait(_));
        outs.push(out);
        if done {
            return outs;
        }
    }
}

/// The messages sent to `peer`, in order.
fn sent_to(outs: &[Output], peer: PeerId) -> Vec<HubMsg> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { peer: p, msg } if *p == peer => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn events(outs: &[Output]) -> Vec<EventRecord> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(rec) => Some(rec.clone()),
            _ => None,
        })
        .collect()
}

fn event_kinds(outs: &[Output]) -> Vec<Event> {
    events(outs).iter().map(|rec| rec.event).collect()
}

/// The first event of `kind`; panics if there is none.
fn event(outs: &[Output], kind: Event) -> EventRecord {
    events(outs)
        .into_iter()
        .find(|rec| rec.event == kind)
        .unwrap_or_else(|| panic!("no {kind:?} event in {outs:#?}"))
}

fn closed(outs: &[Output], peer: PeerId) -> bool {
    outs.iter().any(|o| matches!(o, Output::Close { peer: p, .. } if *p == peer))
}

/// The deadline of the final `Wait`.
fn deadline(outs: &[Output]) -> Option<Instant> {
    match outs.last() {
        Some(Output::Wait(at)) => *at,
        other => panic!("outputs not drained to Wait: {other:?}"),
    }
}

/// The call offered to `agent`, if any.
fn offered(outs: &[Output], agent: PeerId) -> Option<CallId> {
    sent_to(outs, agent).iter().find_map(|m| match m {
        HubMsg::Offer { call_id, .. } => Some(*call_id),
        _ => None,
    })
}

/// The (position, estimate) updates sent to `kiosk`.
fn positions(outs: &[Output], kiosk: PeerId) -> Vec<(u32, Option<u32>)> {
    sent_to(outs, kiosk)
        .iter()
        .filter_map(|m| match m {
            HubMsg::Queued { position, estimated_wait_s, .. } => Some((*position, *estimated_wait_s)),
            _ => None,
        })
        .collect()
}

fn room(state: RoomState) -> HubMsg {
    HubMsg::Room { state }
}

fn is_error(msg: &HubMsg, fatal: bool) -> bool {
    matches!(msg, HubMsg::Error { fatal: f, .. } if *f == fatal)
}

// ----- the harness -----

/// The core with a peer counter and the event log, on a fake clock.
struct Hub {
    q: AgentQueue,
    next_peer: PeerId,
    /// Every event the core emitted, in order.
    log: Vec<EventRecord>,
}

impl Hub {
    fn new(config: QueueConfig) -> (Self, Instant) {
        let t0 = Instant::now(); // the only clock read
        let hub = Hub { q: AgentQueue::new(config, t0, T0_UNIX_MS), next_peer: 1, log: Vec::new() };
        (hub, t0)
    }

    fn input(&mut self, input: Input, now: Instant) -> Vec<Output> {
        self.q.handle_input(input, now).expect("outputs drained");
        let outs = drain(&mut self.q);
        self.log.extend(events(&outs));
        outs
    }

    fn send(&mut self, peer: PeerId, msg: ClientMsg, now: Instant) -> Vec<Output> {
        self.input(Input::Message { peer, msg }, now)
    }

    fn tick(&mut self, now: Instant) -> Vec<Output> {
        self.input(Input::Tick, now)
    }

    fn disconnect(&mut self, peer: PeerId, now: Instant) -> Vec<Output> {
        self.input(Input::Disconnected { peer }, now)
    }

    /// A completed TLS handshake with a certificate for `role` and `id`; no hello yet.
    fn connect(&mut self, role: Role, id: &str, now: Instant) -> (PeerId, Vec<Output>) {
        let peer = self.next_peer;
        self.next_peer += 1;
        let outs = self.input(Input::Connected { peer, role, id: id.into() }, now);
        (peer, outs)
    }

    fn hello(&mut self, peer: PeerId, role: Role, now: Instant) -> Vec<Output> {
        self.send(peer, ClientMsg::Hello { role, software: "test".into() }, now)
    }

    /// A kiosk connected and welcomed.
    fn kiosk(&mut self, id: &str, now: Instant) -> PeerId {
        let (peer, _) = self.connect(Role::Kiosk, id, now);
        let outs = self.hello(peer, Role::Kiosk, now);
        assert_eq!(sent_to(&outs, peer), [HubMsg::Welcome { id: id.into(), role: Role::Kiosk }]);
        peer
    }

    /// An agent connected and welcomed; its room starts CLOSE.
    fn agent(&mut self, id: &str, now: Instant) -> PeerId {
        let (peer, _) = self.connect(Role::Agent, id, now);
        let outs = self.hello(peer, Role::Agent, now);
        assert_eq!(
            sent_to(&outs, peer),
            [HubMsg::Welcome { id: id.into(), role: Role::Agent }, room(RoomState::Close)]
        );
        peer
    }

    /// An agent connected, welcomed and IDLE.
    fn idle_agent(&mut self, id: &str, now: Instant) -> PeerId {
        let peer = self.agent(id, now);
        self.presence(peer, Presence::Idle, now);
        peer
    }

    fn request(&mut self, kiosk: PeerId, now: Instant) -> Vec<Output> {
        self.send(kiosk, ClientMsg::RequestAgent { resume: None, consent: false }, now)
    }

    fn resume(&mut self, kiosk: PeerId, call_id: CallId, now: Instant) -> Vec<Output> {
        self.send(kiosk, ClientMsg::RequestAgent { resume: Some(call_id), consent: false }, now)
    }

    fn presence(&mut self, agent: PeerId, presence: Presence, now: Instant) -> Vec<Output> {
        self.send(agent, ClientMsg::SetPresence { presence }, now)
    }

    fn accept(&mut self, agent: PeerId, call_id: CallId, now: Instant) -> Vec<Output> {
        self.send(agent, ClientMsg::Accept { call_id }, now)
    }

    fn decline(&mut self, agent: PeerId, call_id: CallId, now: Instant) -> Vec<Output> {
        self.send(agent, ClientMsg::Decline { call_id }, now)
    }

    fn hang_up(&mut self, peer: PeerId, call_id: CallId, now: Instant) -> Vec<Output> {
        self.send(peer, ClientMsg::HangUp { call_id }, now)
    }

    fn text(&mut self, peer: PeerId, call_id: CallId, id: u64, body: &str, now: Instant) -> Vec<Output> {
        self.send(peer, ClientMsg::Text { call_id, id, body: body.into() }, now)
    }

    /// `agent` (IDLE) is offered `kiosk`'s new request and accepts it: the call.
    fn connected_call(&mut self, kiosk: PeerId, agent: PeerId, now: Instant) -> CallId {
        let outs = self.request(kiosk, now);
        let call_id = offered(&outs, agent).expect("the agent is offered the call");
        let outs = self.accept(agent, call_id, now);
        assert!(
            sent_to(&outs, kiosk)
                .iter()
                .any(|m| matches!(m, HubMsg::Connected { call_id: c, .. } if *c == call_id)),
            "the kiosk is connected: {outs:#?}"
        );
        call_id
    }
}

// ----- fairness -----

#[test]
fn callers_are_offered_in_arrival_order() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.agent("a1", t0);
    let (k1, k2, k3) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0));
    hub.request(k1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));
    hub.request(k3, t0 + secs(3));

    let outs = hub.presence(a1, Presence::Idle, t0 + secs(4));
    assert_eq!(
        sent_to(&outs, a1),
        [
            room(RoomState::Idle),
            HubMsg::Offer { call_id: 1, kiosk: "k1".into(), waited_ms: 3000, timeout_ms: 20_000 },
            room(RoomState::Offered),
        ]
    );
    assert_eq!(sent_to(&outs, k1), [HubMsg::Ringing { call_id: 1 }]);

    hub.accept(a1, 1, t0 + secs(5));
    let outs = hub.hang_up(a1, 1, t0 + secs(6));
    assert_eq!(offered(&outs, a1), Some(2));
    assert!(sent_to(&outs, k2).contains(&HubMsg::Ringing { call_id: 2 }));

    hub.accept(a1, 2, t0 + secs(7));
    let outs = hub.hang_up(a1, 2, t0 + secs(8));
    assert_eq!(offered(&outs, a1), Some(3));
    assert!(sent_to(&outs, k3).contains(&HubMsg::Ringing { call_id: 3 }));
}

#[test]
fn agent_idle_longest_gets_the_offer() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (a1, a2, a3) = (hub.agent("a1", t0), hub.agent("a2", t0), hub.agent("a3", t0));
    hub.presence(a2, Presence::Idle, t0 + secs(1));
    hub.presence(a3, Presence::Idle, t0 + secs(2));
    hub.presence(a1, Presence::Idle, t0 + secs(3));
    let (k1, k2, k3) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0));

    let outs = hub.request(k1, t0 + secs(4));
    assert_eq!((offered(&outs, a1), offered(&outs, a2), offered(&outs, a3)), (None, Some(1), None));
    let outs = hub.request(k2, t0 + secs(5));
    assert_eq!((offered(&outs, a1), offered(&outs, a3)), (None, Some(2)));
    let outs = hub.request(k3, t0 + secs(6));
    assert_eq!(offered(&outs, a1), Some(3));
}

#[test]
fn agent_back_from_a_call_queues_behind_agents_already_idle() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    let a2 = hub.idle_agent("a2", t0 + secs(2));
    hub.hang_up(a1, call, t0 + secs(3)); // a1 IDLE since 3 s, a2 since 2 s

    let outs = hub.request(k2, t0 + secs(4));
    assert_eq!((offered(&outs, a1), offered(&outs, a2)), (None, Some(2)));
}

// ----- offers: timeout, decline, CLOSE -----

#[test]
fn unanswered_offer_moves_to_the_next_idle_agent_and_closes_the_agent() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.agent("a1", t0);
    let a2 = hub.agent("a2", t0);
    hub.presence(a1, Presence::Idle, t0 + secs(1));
    hub.presence(a2, Presence::Idle, t0 + secs(2));
    let k1 = hub.kiosk("k1", t0);
    let outs = hub.request(k1, t0 + secs(3));
    assert_eq!(offered(&outs, a1), Some(1));
    assert_eq!(deadline(&outs), Some(t0 + secs(23)));

    let outs = hub.tick(t0 + secs(22));
    assert_eq!(outs, [Output::Wait(Some(t0 + secs(23)))]);

    let outs = hub.tick(t0 + secs(23));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::OfferWithdrawn { call_id: 1, reason: WithdrawReason::Timeout }, room(RoomState::Close)]
    );
    assert_eq!(
        sent_to(&outs, a2),
        [
            HubMsg::Offer { call_id: 1, kiosk: "k1".into(), waited_ms: 20_000, timeout_ms: 20_000 },
            room(RoomState::Offered),
        ]
    );
    assert_eq!(sent_to(&outs, k1), [HubMsg::Ringing { call_id: 1 }]);
    let timeout = event(&outs, Event::OfferTimeout);
    assert_eq!((timeout.call_id, timeout.agent.as_deref()), (Some(1), Some("a1")));
    assert_eq!(hub.q.stats().offer_timeouts, 1);
}

#[test]
fn caller_keeps_its_place_after_an_unanswered_offer() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    hub.request(k1, t0 + secs(1));
    let outs = hub.request(k2, t0 + secs(2));
    assert_eq!(positions(&outs, k2), [(2, Some(360))]);

    // a1 never answers: CLOSE, and nobody is left to estimate from.
    let outs = hub.tick(t0 + secs(21));
    assert_eq!(positions(&outs, k1), [(1, None)]);
    assert_eq!(positions(&outs, k2), [(2, None)]);
    assert_eq!(offered(&outs, a1), None);

    let a2 = hub.agent("a2", t0 + secs(30));
    let outs = hub.presence(a2, Presence::Idle, t0 + secs(31));
    assert_eq!(offered(&outs, a2), Some(1));
}

#[test]
fn declined_call_goes_to_the_next_agent_and_never_back_to_the_decliner() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (a1, a2) = (hub.agent("a1", t0), hub.agent("a2", t0));
    hub.presence(a1, Presence::Idle, t0 + secs(1));
    hub.presence(a2, Presence::Idle, t0 + secs(2));
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let outs = hub.request(k1, t0 + secs(3));
    assert_eq!(offered(&outs, a1), Some(1));

    let outs = hub.decline(a1, 1, t0 + secs(4));
    assert_eq!(sent_to(&outs, a1), [room(RoomState::Idle)]);
    assert_eq!(offered(&outs, a2), Some(1));
    let declined = event(&outs, Event::Declined);
    assert_eq!((declined.call_id, declined.agent.as_deref()), (Some(1), Some("a1")));

    let outs = hub.decline(a2, 1, t0 + secs(5));
    assert_eq!(sent_to(&outs, a2), [room(RoomState::Idle)]);
    assert_eq!(offered(&outs, a1), None);
    assert_eq!(positions(&outs, k1), [(1, Some(90))]);

    // Both agents are IDLE but declined call 1: the next caller is served, call 1 waits.
    let outs = hub.request(k2, t0 + secs(6));
    assert_eq!((offered(&outs, a1), offered(&outs, a2)), (Some(2), None));
    let outs = hub.tick(t0 + secs(7));
    assert_eq!(offered(&outs, a2), None);

    let a3 = hub.agent("a3", t0 + secs(8));
    let outs = hub.presence(a3, Presence::Idle, t0 + secs(8));
    assert_eq!(offered(&outs, a3), Some(1));
    assert_eq!(hub.q.stats().declined, 2);
}

#[test]
fn accepting_or_declining_a_call_not_offered_to_you_is_a_non_fatal_error() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (a1, a2) = (hub.idle_agent("a1", t0), hub.idle_agent("a2", t0 + secs(1)));
    let k1 = hub.kiosk("k1", t0);
    let outs = hub.request(k1, t0 + secs(2));
    assert_eq!(offered(&outs, a1), Some(1));

    for outs in
        [hub.accept(a2, 1, t0 + secs(3)), hub.decline(a2, 1, t0 + secs(3)), hub.accept(a2, 99, t0 + secs(3))]
    {
        let msgs = sent_to(&outs, a2);
        assert!(matches!(msgs.as_slice(), [m] if is_error(m, false)), "{msgs:?}");
        assert!(!closed(&outs, a2));
    }
    let outs = hub.accept(a1, 1, t0 + secs(4));
    assert!(sent_to(&outs, a1).contains(&HubMsg::Connected {
        call_id: 1,
        peer: "k1".into(),
        recorded: false
    }));
}

#[test]
fn agents_in_close_get_no_offers() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.agent("a1", t0); // CLOSE from the start
    let a2 = hub.idle_agent("a2", t0 + secs(1));
    let outs = hub.presence(a2, Presence::Close, t0 + secs(2));
    assert_eq!(sent_to(&outs, a2), [room(RoomState::Close)]);

    let k1 = hub.kiosk("k1", t0);
    let outs = hub.request(k1, t0 + secs(3));
    assert_eq!((offered(&outs, a1), offered(&outs, a2)), (None, None));
    assert_eq!(positions(&outs, k1), [(1, None)]);
    let outs = hub.tick(t0 + secs(60));
    assert_eq!((offered(&outs, a1), offered(&outs, a2)), (None, None));

    let outs = hub.presence(a1, Presence::Idle, t0 + secs(61));
    assert_eq!(offered(&outs, a1), Some(1));
}

// ----- callers leaving -----

#[test]
fn caller_hanging_up_while_waiting_leaves_the_queue() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    hub.request(k1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));

    let outs = hub.hang_up(k1, 1, t0 + secs(5));
    assert_eq!(sent_to(&outs, k1), [HubMsg::CallEnded { call_id: 1, reason: EndReason::KioskHungUp }]);
    let abandoned = event(&outs, Event::Abandoned);
    assert_eq!(
        (abandoned.call_id, abandoned.kiosk.as_deref(), abandoned.detail.as_deref()),
        (Some(1), Some("k1"), Some("kiosk_hung_up"))
    );
    assert_eq!(positions(&outs, k2), [(1, None)]);
    assert_eq!(hub.q.snapshot(t0 + secs(5)).waiting, 1);
    assert_eq!(hub.q.stats().abandoned, 1);
}

#[test]
fn caller_hanging_up_while_offered_withdraws_the_offer_and_the_agent_keeps_its_rank() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0 + secs(1));
    let a2 = hub.idle_agent("a2", t0 + secs(2));
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let outs = hub.request(k1, t0 + secs(3));
    assert_eq!(offered(&outs, a1), Some(1));

    let outs = hub.hang_up(k1, 1, t0 + secs(4));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::OfferWithdrawn { call_id: 1, reason: WithdrawReason::CallerLeft }, room(RoomState::Idle)]
    );
    assert_eq!(sent_to(&outs, k1), [HubMsg::CallEnded { call_id: 1, reason: EndReason::KioskHungUp }]);
    assert!(event_kinds(&outs).contains(&Event::Abandoned));
    assert_eq!(deadline(&outs), None);

    // a1 did nothing wrong: still idle longer than a2.
    let outs = hub.request(k2, t0 + secs(5));
    assert_eq!((offered(&outs, a1), offered(&outs, a2)), (Some(2), None));
}

#[test]
fn hang_up_of_an_unknown_call_is_answered_with_call_ended_unknown() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let k1 = hub.kiosk("k1", t0);
    let a1 = hub.agent("a1", t0);
    for peer in [k1, a1] {
        let outs = hub.hang_up(peer, 42, t0 + secs(1));
        assert_eq!(sent_to(&outs, peer), [HubMsg::CallEnded { call_id: 42, reason: EndReason::Unknown }]);
        assert!(events(&outs).is_empty());
    }
}

// ----- agents leaving -----

#[test]
fn agent_disconnecting_mid_call_ends_the_call() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));

    let outs = hub.disconnect(a1, t0 + secs(30));
    assert_eq!(
        sent_to(&outs, k1),
        [HubMsg::CallEnded { call_id: call, reason: EndReason::AgentDisconnected }]
    );
    let ended = event(&outs, Event::Ended);
    assert_eq!((ended.call_id, ended.detail.as_deref()), (Some(call), Some("agent_disconnected")));
    assert!(event_kinds(&outs).contains(&Event::AgentOffline));
    let snap = hub.q.snapshot(t0 + secs(30));
    assert_eq!((snap.calls_connected, snap.waiting, snap.agents.len()), (0, 0, 0));
}

#[test]
fn agent_disconnecting_while_offered_puts_the_call_back_in_its_place() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let outs = hub.request(k1, t0 + secs(1));
    assert_eq!(offered(&outs, a1), Some(1));
    hub.request(k2, t0 + secs(2));

    let outs = hub.disconnect(a1, t0 + secs(3));
    assert_eq!(positions(&outs, k1), [(1, None)]);
    assert_eq!(positions(&outs, k2), [(2, None)]);
    let withdrawn = event(&outs, Event::OfferWithdrawn);
    assert_eq!((withdrawn.call_id, withdrawn.detail.as_deref()), (Some(1), Some("agent_disconnected")));
    assert_eq!(deadline(&outs), None, "no offer deadline left");

    // Not a decline: the same agent, back online, gets the call.
    let a1 = hub.agent("a1", t0 + secs(4));
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(4));
    assert_eq!(offered(&outs, a1), Some(1));
}

// ----- kiosks losing their connection -----

#[test]
fn waiting_kiosk_that_reconnects_within_grace_keeps_its_place() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    hub.request(k1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));

    let outs = hub.disconnect(k1, t0 + secs(3));
    assert_eq!(event_kinds(&outs), [Event::KioskAway]);
    assert!(sent_to(&outs, k2).is_empty());
    assert_eq!(deadline(&outs), Some(t0 + secs(13)));

    let k1 = hub.kiosk("k1", t0 + secs(8));
    let outs = hub.resume(k1, 1, t0 + secs(8));
    assert_eq!(sent_to(&outs, k1), [HubMsg::Queued { call_id: 1, position: 1, estimated_wait_s: None }]);
    assert_eq!(event_kinds(&outs), [Event::KioskBack]);
    assert_eq!(deadline(&outs), None);
    let outs = hub.tick(t0 + secs(13));
    assert!(events(&outs).is_empty());
    assert_eq!(hub.q.snapshot(t0 + secs(13)).waiting, 2);
}

#[test]
fn away_caller_is_passed_over_until_it_returns() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    hub.request(k1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));
    hub.disconnect(k1, t0 + secs(3));

    let a1 = hub.agent("a1", t0 + secs(4));
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(4));
    assert_eq!(offered(&outs, a1), Some(2));

    let a2 = hub.idle_agent("a2", t0 + secs(5));
    let k1 = hub.kiosk("k1", t0 + secs(6));
    let outs = hub.resume(k1, 1, t0 + secs(6));
    assert_eq!(offered(&outs, a2), Some(1));
    assert_eq!(sent_to(&outs, k1), [HubMsg::Ringing { call_id: 1 }]);
}

#[test]
fn kiosk_losing_its_connection_while_offered_takes_the_offer_back() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    hub.request(k1, t0 + secs(1));

    let outs = hub.disconnect(k1, t0 + secs(2));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::OfferWithdrawn { call_id: 1, reason: WithdrawReason::CallerAway }, room(RoomState::Idle)]
    );
    assert_eq!(deadline(&outs), Some(t0 + secs(12)), "the grace period, no offer deadline");

    let k1 = hub.kiosk("k1", t0 + secs(5));
    let outs = hub.resume(k1, 1, t0 + secs(5));
    assert_eq!(offered(&outs, a1), Some(1), "not a decline");
}

#[test]
fn kiosk_reconnecting_during_a_call_gets_the_call_back() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));

    let outs = hub.disconnect(k1, t0 + secs(10));
    assert_eq!(sent_to(&outs, a1), [HubMsg::PeerPresence { call_id: call, present: false }]);
    assert_eq!(event_kinds(&outs), [Event::KioskAway]);
    assert_eq!(deadline(&outs), Some(t0 + secs(20)));

    let k1 = hub.kiosk("k1", t0 + secs(15));
    let outs = hub.resume(k1, call, t0 + secs(15));
    assert_eq!(sent_to(&outs, k1), [HubMsg::Connected { call_id: call, peer: "a1".into(), recorded: false }]);
    assert_eq!(sent_to(&outs, a1), [HubMsg::PeerPresence { call_id: call, present: true }]);
    assert_eq!(event_kinds(&outs), [Event::KioskBack]);
    assert_eq!(deadline(&outs), None);

    let outs = hub.tick(t0 + secs(20));
    assert_eq!(outs, [Output::Wait(None)]);
    assert_eq!(hub.q.snapshot(t0 + secs(20)).calls_connected, 1);
}

#[test]
fn grace_expiry_ends_a_call_with_kiosk_disconnected() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    hub.disconnect(k1, t0 + secs(10));

    let outs = hub.tick(t0 + secs(19));
    assert!(sent_to(&outs, a1).is_empty());

    let outs = hub.tick(t0 + secs(20));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::CallEnded { call_id: call, reason: EndReason::KioskDisconnected }, room(RoomState::Idle)]
    );
    let ended = event(&outs, Event::Ended);
    assert_eq!((ended.call_id, ended.detail.as_deref()), (Some(call), Some("kiosk_disconnected")));

    // Too late: the kiosk is told the call is gone.
    let k1 = hub.kiosk("k1", t0 + secs(21));
    let outs = hub.resume(k1, call, t0 + secs(21));
    assert_eq!(sent_to(&outs, k1), [HubMsg::CallEnded { call_id: call, reason: EndReason::Unknown }]);
}

#[test]
fn grace_expiry_abandons_a_waiting_call() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    hub.request(k1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));
    hub.disconnect(k1, t0 + secs(3));

    let outs = hub.tick(t0 + secs(13));
    let abandoned = event(&outs, Event::Abandoned);
    assert_eq!((abandoned.call_id, abandoned.detail.as_deref()), (Some(1), Some("kiosk_disconnected")));
    assert_eq!(positions(&outs, k2), [(1, None)]);
    assert_eq!(deadline(&outs), None);
}

#[test]
fn without_grace_a_lost_kiosk_ends_its_call_at_once() {
    let (mut hub, t0) = Hub::new(QueueConfig { kiosk_grace: Duration::ZERO, ..QueueConfig::default() });
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));

    let outs = hub.disconnect(k1, t0 + secs(2));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::CallEnded { call_id: call, reason: EndReason::KioskDisconnected }, room(RoomState::Idle)]
    );
    assert_eq!(deadline(&outs), None);
}

// ----- callers moving from another hub -----

fn shared() -> QueueConfig {
    QueueConfig { shared_places: true, ..QueueConfig::default() }
}

/// Where a caller waited on `hub-a`: call `call_id`, joined at `t0 + joined`.
fn place(call_id: CallId, joined: Duration) -> Moved {
    Moved { hub: "hub-a".into(), call_id, joined_ms: T0_UNIX_MS + joined.as_millis() as u64 }
}

fn found(hub: &mut Hub, peer: PeerId, call_id: CallId, place: Option<Moved>, now: Instant) -> Vec<Output> {
    hub.input(Input::PlaceFound { peer, call_id, place }, now)
}

fn queued_id(outs: &[Output], kiosk: PeerId) -> Option<CallId> {
    sent_to(outs, kiosk).iter().find_map(|m| match m {
        HubMsg::Queued { call_id, .. } => Some(*call_id),
        _ => None,
    })
}

#[test]
fn callers_from_a_dead_hub_keep_their_original_order() {
    let (mut hub, t0) = Hub::new(shared());
    let a1 = hub.agent("a1", t0);
    let (k1, k2, k3) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0));
    // k3 joined this hub at 10 s; k1 and k2 had joined hub-a at 1 s and 2 s, and come here at
    // 20 s and 21 s naming their calls there.
    hub.request(k3, t0 + secs(10));
    let outs = hub.resume(k2, 6, t0 + secs(20));
    assert_eq!(
        outs.iter().filter(|o| matches!(o, Output::FindPlace { .. })).collect::<Vec<_>>(),
        [&Output::FindPlace { peer: k2, kiosk: "k2".into(), call_id: 6 }]
    );
    assert!(sent_to(&outs, k2).is_empty(), "nothing is said until the place is known");
    let outs = found(&mut hub, k2, 6, Some(place(6, secs(2))), t0 + secs(20));
    assert_eq!(positions(&outs, k2), [(1, None)]);
    assert_eq!(positions(&outs, k3), [(2, None)]);
    let rec = event(&outs, Event::Queued);
    assert_eq!((rec.kiosk.as_deref(), rec.position), (Some("k2"), Some(1)));
    assert_eq!(rec.moved, Some(place(6, secs(2))));

    hub.resume(k1, 5, t0 + secs(21));
    let outs = found(&mut hub, k1, 5, Some(place(5, secs(1))), t0 + secs(21));
    assert_eq!(positions(&outs, k1), [(1, None)]);
    assert_eq!(positions(&outs, k2), [(2, None)]);
    assert_eq!(positions(&outs, k3), [(3, None)]);
    let first = queued_id(&outs, k1).expect("k1 queued under a new number");
    assert_ne!(first, 5);

    // The agent takes them in the order they first joined, k1's wait counted from 1 s.
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(30));
    assert_eq!(offered(&outs, a1), Some(first));
    assert!(sent_to(&outs, a1).iter().any(|m| matches!(m, HubMsg::Offer { waited_ms: 29_000, .. })));
    assert_eq!(hub.q.stats().moved_in, 2);
    // The event log tells the same: replayed, k1 waited from 1 s.
    let lines: Vec<String> = hub.log.iter().map(|r| serde_json::to_string(r).expect("json")).collect();
    let summary = LogSummary::from_lines(lines.iter().map(String::as_str));
    assert_eq!(summary.calls[&first].queued_ms, Some(T0_UNIX_MS + 1000));
}

/// A caller that waited on `hub-a` as call `call_id` since `t0 + joined`.
fn waiting(kiosk: &str, call_id: CallId, joined: Duration) -> Waiting {
    Waiting { kiosk: kiosk.into(), call_id, joined_ms: T0_UNIX_MS + joined.as_millis() as u64 }
}

#[test]
fn a_dead_hubs_callers_are_taken_over_in_their_order_and_wait_for_their_kiosks() {
    let (mut hub, t0) = Hub::new(shared());
    let a1 = hub.agent("a1", t0);
    let k3 = hub.kiosk("k3", t0);
    hub.request(k3, t0 + secs(10));
    // hub-a's lease expired: its callers k1 (joined at 1 s) and k2 (2 s) come to this hub.
    let callers = vec![waiting("k1", 5, secs(1)), waiting("k2", 6, secs(2))];
    let outs = hub.input(Input::Adopt { from: "hub-a".into(), callers }, t0 + secs(20));
    let queued: Vec<_> = events(&outs).into_iter().filter(|r| r.event == Event::Queued).collect();
    assert_eq!(queued.len(), 2);
    assert_eq!((queued[0].kiosk.as_deref(), queued[0].position), (Some("k1"), Some(1)));
    assert_eq!((queued[1].kiosk.as_deref(), queued[1].position), (Some("k2"), Some(2)));
    assert_eq!(queued[0].moved, Some(place(5, secs(1))));
    assert_eq!(positions(&outs, k3), [(3, None)], "this hub's own caller is now behind them");
    assert_eq!(hub.q.stats().adopted, 2);
    // Their kiosks are not here yet: they are held as away (not offered meanwhile), and given
    // up when the grace ends (below, at 30 s). Before that, the next look for a hub with an
    // advisor free (k3 waits here, and nobody is free here).
    assert_eq!(deadline(&hub.tick(t0 + secs(21))), Some(t0 + secs(21) + LOOK_EVERY));

    // k1 comes back naming its call on hub-a: it is the call taken over, first in line.
    let k1 = hub.kiosk("k1", t0 + secs(22));
    let outs = hub.resume(k1, 5, t0 + secs(22));
    assert!(!outs.iter().any(|o| matches!(o, Output::FindPlace { .. })), "known here: no lookup");
    assert_eq!(positions(&outs, k1), [(1, None)]);
    let first = queued_id(&outs, k1).expect("k1 told its new number");
    assert_eq!(event(&outs, Event::KioskBack).call_id, Some(first));
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(23));
    assert_eq!(offered(&outs, a1), Some(first));
    assert!(sent_to(&outs, a1).iter().any(|m| matches!(m, HubMsg::Offer { waited_ms: 22_000, .. })));

    // k2 never comes: given up when its grace ends, as any kiosk that went away.
    let outs = hub.tick(t0 + secs(30));
    let gone = event(&outs, Event::Abandoned);
    assert_eq!((gone.kiosk.as_deref(), gone.detail.as_deref()), (Some("k2"), Some("kiosk_disconnected")));
    // A second takeover naming a kiosk that has a call here changes nothing.
    let outs = hub.input(
        Input::Adopt { from: "hub-c".into(), callers: vec![waiting("k1", 9, secs(0))] },
        t0 + secs(31),
    );
    assert!(events(&outs).is_empty(), "{outs:?}");
}

#[test]
fn a_caller_that_resumed_on_another_hub_is_dropped_here_and_the_report_counts_one_call() {
    let (mut hub, t0) = Hub::new(shared());
    let a1 = hub.agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    hub.request(k1, t0 + secs(1));
    let k2 = hub.kiosk("k2", t0);
    hub.request(k2, t0 + secs(2));
    hub.disconnect(k1, t0 + secs(3));
    // k1 resumed on hub-b.
    let outs = hub.input(Input::Released { kiosk: "k1".into() }, t0 + secs(4));
    let rec = event(&outs, Event::Abandoned);
    assert_eq!((rec.kiosk.as_deref(), rec.detail.as_deref()), (Some("k1"), Some(MOVED)));
    assert_eq!(positions(&outs, k2), [(1, None)], "k2 moves up");
    assert_eq!(hub.q.stats().released, 1);
    // An offered caller released goes back from the agent, who stays IDLE.
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(5));
    let offer = offered(&outs, a1).expect("k2 offered");
    let outs = hub.input(Input::Released { kiosk: "k2".into() }, t0 + secs(6));
    assert_eq!(
        sent_to(&outs, a1),
        [
            HubMsg::OfferWithdrawn { call_id: offer, reason: WithdrawReason::CallerLeft },
            room(RoomState::Idle)
        ]
    );
    // A kiosk in a call here, or unknown, is left alone.
    let k3 = hub.kiosk("k3", t0 + secs(7));
    let call = hub.connected_call(k3, a1, t0 + secs(7));
    let outs = hub.input(Input::Released { kiosk: "k3".into() }, t0 + secs(8));
    assert!(events(&outs).is_empty() && sent_to(&outs, k3).is_empty());
    assert!(hub.input(Input::Released { kiosk: "nobody".into() }, t0 + secs(8)).len() == 1);
    hub.hang_up(k3, call, t0 + secs(9));

    // The deployment's report: k1 waited on this hub and went on on hub-b; one call.
    let mut records: Vec<(String, EventRecord)> =
        hub.log.iter().map(|r| ("hub-a".to_string(), r.clone())).collect();
    let k1_call = records.iter().find(|(_, r)| r.kiosk.as_deref() == Some("k1")).and_then(|(_, r)| r.call_id);
    let mut moved = records[0].1.clone();
    moved.ts_ms = T0_UNIX_MS + 4_000;
    moved.event = Event::Queued;
    moved.call_id = Some(1);
    moved.kiosk = Some("k1".into());
    moved.agent = None;
    moved.detail = None;
    moved.moved = Some(Moved {
        hub: "hub-a".into(),
        call_id: k1_call.expect("k1's call"),
        joined_ms: T0_UNIX_MS + 1000,
    });
    records.push(("hub-b".into(), moved));
    records.sort_by_key(|(_, r)| r.ts_ms);
    let summary = LogSummary::from_hubs(records.iter().map(|(h, r)| (h.as_str(), r)));
    let k1_calls: Vec<_> = summary.calls.values().filter(|c| c.kiosk.as_deref() == Some("k1")).collect();
    assert_eq!(k1_calls.len(), 1);
    assert!(k1_calls[0].is_open(), "still waiting on hub-b, not abandoned: {:?}", k1_calls[0]);
    assert_eq!(k1_calls[0].queued_ms, Some(T0_UNIX_MS + 1000));
}

fn looks(outs: &[Output]) -> usize {
    outs.iter().filter(|o| matches!(o, Output::FindFreeHub { .. })).count()
}

/// The callers of the look in `outs`, by kiosk id.
fn looked_for(outs: &[Output]) -> Vec<Waiting> {
    outs.iter()
        .find_map(|o| match o {
            Output::FindFreeHub { callers } => Some(callers.clone()),
            _ => None,
        })
        .expect("a look")
}

fn moves(outs: &[Output]) -> Vec<(PeerId, CallId, String)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { peer, msg: HubMsg::MoveTo { call_id, address } } => {
                Some((*peer, *call_id, address.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn callers_with_no_advisor_free_here_look_for_another_hub_at_most_every_look_period() {
    let (mut hub, t0) = Hub::new(shared());
    // Nobody waiting: no look, whatever the advisors.
    let a1 = hub.agent("a1", t0);
    assert_eq!(looks(&hub.tick(t0)), 0);
    // A caller waits and the only advisor is CLOSE: a look at once, then one per LOOK_EVERY.
    let k1 = hub.kiosk("k1", t0 + secs(1));
    let outs = hub.request(k1, t0 + secs(1));
    assert_eq!(looks(&outs), 1);
    assert_eq!(deadline(&outs), Some(t0 + secs(1) + LOOK_EVERY), "the core wakes for the next look");
    assert_eq!(looks(&hub.tick(t0 + secs(1) + LOOK_EVERY / 2)), 0);
    let outs =
        hub.input(Input::FreeHub { address: None, callers: Vec::new() }, t0 + secs(1) + LOOK_EVERY / 2);
    assert_eq!((looks(&outs), moves(&outs).len()), (0, 0), "nowhere to go: it waits here");
    assert_eq!(looks(&hub.tick(t0 + secs(1) + LOOK_EVERY)), 1);
    // An advisor here goes IDLE: offered here, no look.
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(3));
    let call = offered(&outs, a1).expect("offered here");
    assert_eq!(looks(&outs), 0);
    // An answer that comes after that sends nobody away.
    let address = Some("hub-b.bank.example:4433".to_string());
    let callers = vec![Waiting { kiosk: "k1".into(), call_id: call, joined_ms: T0_UNIX_MS + 1000 }];
    let outs = hub.input(Input::FreeHub { address: address.clone(), callers }, t0 + secs(3));
    assert!(moves(&outs).is_empty(), "{outs:?}");
    hub.accept(a1, call, t0 + secs(3));
    // A second caller while the advisor is busy looks again; without the lease, it does not.
    let k2 = hub.kiosk("k2", t0 + secs(4));
    assert_eq!(looks(&hub.request(k2, t0 + secs(4))), 1);
    hub.input(Input::Lease { held: false }, t0 + secs(4));
    assert_eq!(looks(&hub.tick(t0 + secs(10))), 0);
    assert_eq!(deadline(&hub.tick(t0 + secs(10))), None, "nothing to wake for without the lease");
    assert_eq!(looks(&hub.input(Input::Lease { held: true }, t0 + secs(11))), 1);

    // A hub without the deployment's database never looks.
    let (mut alone, t0) = Hub::new(QueueConfig::default());
    let k = alone.kiosk("k1", t0);
    assert_eq!(looks(&alone.request(k, t0)), 0);
    assert_eq!(deadline(&alone.tick(t0 + secs(5))), None);
}

#[test]
fn waiting_callers_are_sent_to_a_hub_with_advisors_free_longest_waiting_first() {
    let (mut hub, t0) = Hub::new(shared());
    let (k1, k2, k3) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0));
    let c1 = queued_id(&hub.request(k1, t0), k1).expect("queued");
    let c2 = queued_id(&hub.request(k2, t0 + secs(1)), k2).expect("queued");
    let c3 = queued_id(&hub.request(k3, t0 + secs(2)), k3).expect("queued");
    // k1's kiosk is away: it is passed over (it cannot be told to move). The look names the
    // others, longest waiting first, with the time each first joined.
    let outs = hub.disconnect(k1, t0 + secs(3));
    let asked = looked_for(&outs);
    let named: Vec<(&str, CallId, u64)> =
        asked.iter().map(|w| (w.kiosk.as_str(), w.call_id, w.joined_ms)).collect();
    assert_eq!(named, [("k2", c2, T0_UNIX_MS + 1000), ("k3", c3, T0_UNIX_MS + 2000)]);
    // One advisor free there: the database chose the first.
    let address = "hub-b.bank.example:4433".to_string();
    let outs = hub
        .input(Input::FreeHub { address: Some(address.clone()), callers: asked[..1].to_vec() }, t0 + secs(3));
    assert_eq!(moves(&outs), [(k2, c2, address.clone())]);
    assert_eq!(hub.q.stats().sent_away, 1);
    // It keeps its place here until the other hub claims it (its kiosk may not get there).
    assert!(events(&outs).is_empty(), "{outs:?}");
    let outs = hub.disconnect(k2, t0 + secs(4));
    assert_eq!(event(&outs, Event::KioskAway).kiosk.as_deref(), Some("k2"));
    let outs = hub.input(Input::Released { kiosk: "k2".into() }, t0 + secs(4));
    let rec = event(&outs, Event::Abandoned);
    assert_eq!((rec.kiosk.as_deref(), rec.detail.as_deref()), (Some("k2"), Some(MOVED)));
    // k1 comes back within its grace and keeps its place; k3 hangs up while the look is out:
    // only k1 is sent.
    let k1 = hub.kiosk("k1", t0 + secs(5));
    hub.resume(k1, c1, t0 + secs(5));
    let asked = looked_for(&hub.tick(t0 + secs(6)));
    assert_eq!(asked.iter().map(|w| w.kiosk.as_str()).collect::<Vec<_>>(), ["k1", "k3"]);
    hub.hang_up(k3, c3, t0 + secs(6));
    let outs = hub.input(Input::FreeHub { address: Some(address.clone()), callers: asked }, t0 + secs(6));
    assert_eq!(moves(&outs), [(k1, c1, address)]);
}

fn moved_call(call_id: CallId, since: Duration) -> MovedCall {
    MovedCall {
        hub: "hub-a".into(),
        call_id,
        kiosk: "k1".into(),
        agent: "a1".into(),
        since_ms: T0_UNIX_MS + since.as_millis() as u64,
    }
}

fn routes(outs: &[Output]) -> Vec<(PeerId, Option<(PeerId, CallId)>)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Route { peer, to } => Some((*peer, *to)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_in_progress_on_a_dead_hub_goes_on_here_whichever_side_comes_first() {
    for kiosk_first in [true, false] {
        let (mut hub, t0) = Hub::new(shared());
        let t = t0 + secs(100);
        let (k1, a1) = if kiosk_first {
            let k1 = hub.kiosk("k1", t);
            let outs = hub.resume(k1, 5, t);
            assert!(outs.iter().any(|o| matches!(o, Output::FindPlace { .. })));
            let outs =
                hub.input(Input::CallFound { peer: k1, call_id: 5, call: Some(moved_call(5, secs(40))) }, t);
            let new = match sent_to(&outs, k1).as_slice() {
                [HubMsg::Connected { call_id, peer, .. }] if peer == "a1" => *call_id,
                other => panic!("{other:?}"),
            };
            let rec = event(&outs, Event::Resumed);
            assert_eq!((rec.call_id, rec.moved.as_ref().map(|m| m.call_id)), (Some(new), Some(5)));
            assert!(routes(&outs).is_empty(), "no agent yet");
            assert_eq!(deadline(&outs), Some(t + secs(10)), "the agent has the grace to come back");
            // The agent comes back and names the call by its number on the dead hub.
            let a1 = hub.agent("a1", t + secs(1));
            let outs = hub.send(a1, ClientMsg::ResumeCall { call_id: 5 }, t + secs(1));
            assert!(!outs.iter().any(|o| matches!(o, Output::FindCall { .. })), "known here: no lookup");
            assert_eq!(
                sent_to(&outs, a1),
                [
                    room(RoomState::Busy),
                    HubMsg::Connected { call_id: new, peer: "k1".into(), recorded: false }
                ]
            );
            assert_eq!(routes(&outs), [(k1, Some((a1, new))), (a1, Some((k1, new)))]);
            (k1, a1)
        } else {
            let a1 = hub.agent("a1", t);
            let outs = hub.send(a1, ClientMsg::ResumeCall { call_id: 5 }, t);
            assert!(outs.contains(&Output::FindCall { peer: a1, agent: "a1".into(), call_id: 5 }));
            let outs =
                hub.input(Input::CallFound { peer: a1, call_id: 5, call: Some(moved_call(5, secs(40))) }, t);
            let new = match sent_to(&outs, a1).as_slice() {
                [
                    HubMsg::Room { state: RoomState::Busy },
                    HubMsg::Connected { call_id, .. },
                    HubMsg::PeerPresence { present: false, .. },
                ] => *call_id,
                other => panic!("{other:?}"),
            };
            let k1 = hub.kiosk("k1", t + secs(1));
            let outs = hub.resume(k1, 5, t + secs(1));
            assert_eq!(
                sent_to(&outs, k1),
                [HubMsg::Connected { call_id: new, peer: "a1".into(), recorded: false }]
            );
            assert!(sent_to(&outs, a1).contains(&HubMsg::PeerPresence { call_id: new, present: true }));
            assert_eq!(routes(&outs), [(k1, Some((a1, new))), (a1, Some((k1, new)))]);
            (k1, a1)
        };
        // Texts flow; the call ends as any other, its handle time from its first answer.
        let call = hub.q.calls.keys().copied().next().expect("the call");
        let outs = hub.send(k1, ClientMsg::Text { call_id: call, id: 1, body: "hello".into() }, t + secs(2));
        assert_eq!(sent_to(&outs, a1), [HubMsg::Text { call_id: call, id: 1, body: "hello".into() }]);
        let outs = hub.hang_up(a1, call, t + secs(3));
        assert_eq!(event(&outs, Event::Ended).call_id, Some(call));
        let lines: Vec<String> = hub.log.iter().map(|r| serde_json::to_string(r).expect("json")).collect();
        let summary = LogSummary::from_lines(lines.iter().map(String::as_str));
        assert_eq!(summary.calls[&call].handle_time(), Some(secs(63)));
        assert_eq!(hub.q.stats().calls_resumed, 1);
    }
}

#[test]
fn a_moved_call_whose_agent_never_comes_back_ends_and_an_unknown_one_is_refused() {
    let (mut hub, t0) = Hub::new(shared());
    let k1 = hub.kiosk("k1", t0);
    hub.resume(k1, 5, t0);
    hub.input(Input::CallFound { peer: k1, call_id: 5, call: Some(moved_call(5, secs(0))) }, t0);
    let outs = hub.tick(t0 + secs(10));
    assert!(
        sent_to(&outs, k1)
            .iter()
            .any(|m| matches!(m, HubMsg::CallEnded { reason: EndReason::AgentDisconnected, .. })),
        "{outs:?}"
    );
    // An agent naming a call nobody holds is told it is unknown; so is one found for another.
    let a2 = hub.agent("a2", t0 + secs(11));
    hub.send(a2, ClientMsg::ResumeCall { call_id: 9 }, t0 + secs(11));
    let outs = hub
        .input(Input::CallFound { peer: a2, call_id: 9, call: Some(moved_call(9, secs(0))) }, t0 + secs(11));
    assert_eq!(sent_to(&outs, a2), [HubMsg::CallEnded { call_id: 9, reason: EndReason::Unknown }]);
    // Without a database, at once.
    let (mut alone, t0) = Hub::new(QueueConfig::default());
    let a1 = alone.agent("a1", t0);
    let outs = alone.send(a1, ClientMsg::ResumeCall { call_id: 3 }, t0);
    assert_eq!(sent_to(&outs, a1), [HubMsg::CallEnded { call_id: 3, reason: EndReason::Unknown }]);
    // A kiosk may not send it.
    let k2 = alone.kiosk("k2", t0);
    let outs = alone.send(k2, ClientMsg::ResumeCall { call_id: 3 }, t0);
    assert!(closed(&outs, k2));
}

#[test]
fn without_its_lease_a_hub_makes_no_offers_until_it_has_it_again() {
    let (mut hub, t0) = Hub::new(shared());
    let k1 = hub.kiosk("k1", t0);
    hub.request(k1, t0);
    hub.input(Input::Lease { held: false }, t0 + secs(1));
    let a1 = hub.agent("a1", t0 + secs(2));
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(2));
    assert_eq!(offered(&outs, a1), None);
    // Callers still join (and keep their places) meanwhile.
    let k2 = hub.kiosk("k2", t0 + secs(3));
    assert_eq!(positions(&hub.request(k2, t0 + secs(3)), k2), [(2, Some(360))]);
    let outs = hub.input(Input::Lease { held: true }, t0 + secs(4));
    assert!(offered(&outs, a1).is_some(), "offers start again with the lease");
    // Its waiting callers are claimed back in the database (another hub may hold copies).
    let reclaimed: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Reclaim { callers } => {
                Some(callers.iter().map(|c| (c.kiosk.clone(), c.joined_ms)).collect::<Vec<_>>())
            }
            _ => None,
        })
        .collect();
    assert_eq!(reclaimed, [vec![("k1".to_string(), T0_UNIX_MS), ("k2".to_string(), T0_UNIX_MS + 3000)]]);
}

#[test]
fn with_a_shared_database_a_restart_keeps_the_waiting_callers_places_and_the_calls() {
    let lines = [
        log_line(1_000, Event::Queued, 7, "k7", None),
        log_line(2_000, Event::Connected, 7, "k7", Some("a1")),
        log_line(3_000, Event::Queued, 8, "k8", None),
        log_line(4_000, Event::Queued, 9, "k9", None),
        log_line(4_500, Event::Queued, 6, "k6", None),
        log_line(5_000, Event::Connected, 6, "k6", Some("a6")),
    ];
    let summary = LogSummary::from_lines(lines.iter().map(String::as_str));
    let (mut hub, t0) = Hub::new(shared());
    hub.q.restore(&summary, t0);
    let outs = drain(&mut hub.q);
    let kinds: Vec<_> =
        events(&outs).iter().map(|r| (r.event, r.call_id, r.agent.clone(), r.detail.clone())).collect();
    let held = |id, agent: Option<&str>| {
        (Event::KioskAway, Some(id), agent.map(str::to_string), Some("hub_restart".into()))
    };
    assert_eq!(
        kinds,
        [
            held(6, Some("a6")),
            held(7, Some("a1")),
            held(8, None),
            held(9, None),
            (Event::HubStarted, None, None, None)
        ]
    );
    assert_eq!(hub.q.stats().calls_restored, 2);
    assert_eq!(deadline(&outs), Some(t0 + secs(10)), "each party has the grace to come back");
    // Call 7: the kiosk comes back first under the call's number, then the agent; media flow
    // again, unrecorded, and texts go through.
    let k7 = hub.kiosk("k7", t0 + secs(1));
    let outs = hub.resume(k7, 7, t0 + secs(1));
    assert!(!outs.iter().any(|o| matches!(o, Output::FindPlace { .. })), "known here: no lookup");
    assert_eq!(sent_to(&outs, k7), [HubMsg::Connected { call_id: 7, peer: "a1".into(), recorded: false }]);
    assert!(routes(&outs).is_empty(), "no agent yet");
    let a1 = hub.agent("a1", t0 + secs(2));
    let outs = hub.send(a1, ClientMsg::ResumeCall { call_id: 7 }, t0 + secs(2));
    assert!(!outs.iter().any(|o| matches!(o, Output::FindCall { .. })), "known here: no lookup");
    assert_eq!(
        sent_to(&outs, a1),
        [room(RoomState::Busy), HubMsg::Connected { call_id: 7, peer: "k7".into(), recorded: false }]
    );
    assert_eq!(routes(&outs), [(k7, Some((a1, 7))), (a1, Some((k7, 7)))]);
    let outs = hub.send(k7, ClientMsg::Text { call_id: 7, id: 1, body: "still here".into() }, t0 + secs(3));
    assert_eq!(sent_to(&outs, a1), [HubMsg::Text { call_id: 7, id: 1, body: "still here".into() }]);
    // k9 comes back first under its number: it is second, behind k8 (away, held), with a
    // wait estimate now that an advisor is here.
    let k9 = hub.kiosk("k9", t0 + secs(4));
    let outs = hub.resume(k9, 9, t0 + secs(4));
    assert_eq!(positions(&outs, k9), [(2, Some(360))]);
    assert_eq!(event(&outs, Event::KioskBack).call_id, Some(9));
    // The next caller is numbered after them.
    let k1 = hub.kiosk("k1", t0 + secs(5));
    let outs = hub.request(k1, t0 + secs(5));
    assert_eq!(queued_id(&outs, k1), Some(10));
    // Call 6: its agent comes back, its kiosk does not: it ends when the grace runs out.
    let a6 = hub.agent("a6", t0 + secs(6));
    let outs = hub.send(a6, ClientMsg::ResumeCall { call_id: 6 }, t0 + secs(6));
    assert_eq!(
        sent_to(&outs, a6),
        [
            room(RoomState::Busy),
            HubMsg::Connected { call_id: 6, peer: "k6".into(), recorded: false },
            HubMsg::PeerPresence { call_id: 6, present: false }
        ]
    );
    let outs = hub.tick(t0 + secs(10));
    assert!(
        sent_to(&outs, a6).contains(&HubMsg::CallEnded { call_id: 6, reason: EndReason::KioskDisconnected }),
        "{outs:?}"
    );
    assert!(hub.q.calls.contains_key(&7), "the call whose parties came back goes on");
}

#[test]
fn with_a_shared_database_a_stop_ends_nothing_and_the_next_start_holds_it_all() {
    let (mut hub, t0) = Hub::new(shared());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let connected = hub.connected_call(k1, a1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));
    let outs = hub.input(Input::Shutdown, t0 + secs(3));
    assert!(sent_to(&outs, k1).is_empty() && sent_to(&outs, k2).is_empty() && sent_to(&outs, a1).is_empty());
    let kinds: Vec<_> = events(&outs).into_iter().map(|r| (r.event, r.detail)).collect();
    assert_eq!(kinds, [(Event::HubStopped, Some("calls_held=2".into()))]);
    // Started again from its log: the call and the place are held for their parties.
    let lines = to_lines(&hub.log);
    let summary = LogSummary::from_lines(lines.iter().map(String::as_str));
    let (mut next, t1) = Hub::new(shared());
    next.q.restore(&summary, t1);
    let outs = drain(&mut next.q);
    let held: Vec<_> = events(&outs)
        .into_iter()
        .filter(|r| r.event == Event::KioskAway)
        .map(|r| (r.call_id, r.agent))
        .collect();
    assert_eq!(held, [(Some(connected), Some("a1".into())), (Some(connected + 1), None)]);
}

#[test]
fn a_caller_without_a_place_elsewhere_is_told_its_call_is_unknown() {
    let (mut hub, t0) = Hub::new(shared());
    let k1 = hub.kiosk("k1", t0);
    hub.resume(k1, 5, t0);
    let outs = found(&mut hub, k1, 5, None, t0 + secs(1));
    assert_eq!(sent_to(&outs, k1), [HubMsg::CallEnded { call_id: 5, reason: EndReason::Unknown }]);
    assert!(events(&outs).is_empty());
    // A hub without the database says so at once.
    let (mut alone, t0) = Hub::new(QueueConfig::default());
    let k1 = alone.kiosk("k1", t0);
    let outs = alone.resume(k1, 5, t0);
    assert_eq!(sent_to(&outs, k1), [HubMsg::CallEnded { call_id: 5, reason: EndReason::Unknown }]);
    assert!(!outs.iter().any(|o| matches!(o, Output::FindPlace { .. })));
}

#[test]
fn a_place_found_too_late_is_dropped() {
    let (mut hub, t0) = Hub::new(shared());
    // The kiosk left before the answer.
    let k1 = hub.kiosk("k1", t0);
    hub.resume(k1, 5, t0);
    hub.disconnect(k1, t0);
    let outs = found(&mut hub, k1, 5, Some(place(5, secs(0))), t0 + secs(1));
    assert!(events(&outs).is_empty() && sent_to(&outs, k1).is_empty());
    // The customer hung up meanwhile.
    let k2 = hub.kiosk("k2", t0);
    hub.resume(k2, 6, t0);
    hub.hang_up(k2, 6, t0);
    let outs = found(&mut hub, k2, 6, Some(place(6, secs(0))), t0 + secs(1));
    assert!(events(&outs).is_empty() && sent_to(&outs, k2).is_empty());
    // The kiosk asked afresh meanwhile: one call, the fresh one.
    let k3 = hub.kiosk("k3", t0);
    hub.resume(k3, 7, t0);
    hub.request(k3, t0);
    let outs = found(&mut hub, k3, 7, Some(place(7, secs(0))), t0 + secs(1));
    assert!(events(&outs).is_empty() && sent_to(&outs, k3).is_empty());
    // An answer for another call than the one asked about.
    let k4 = hub.kiosk("k4", t0);
    hub.resume(k4, 8, t0);
    let outs = found(&mut hub, k4, 9, Some(place(9, secs(0))), t0 + secs(1));
    assert!(events(&outs).is_empty());
    assert_eq!(hub.q.snapshot(t0 + secs(1)).waiting, 1);
    assert_eq!(hub.q.stats().moved_in, 0);
}

#[test]
fn a_place_from_the_future_counts_as_now_and_a_full_queue_refuses_it() {
    let config = QueueConfig { max_queue: 1, ..shared() };
    let (mut hub, t0) = Hub::new(config);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    hub.resume(k1, 5, t0 + secs(5));
    // Another hub's clock ahead of ours: the caller joins at the back, now.
    let outs = found(&mut hub, k1, 5, Some(place(5, secs(3600))), t0 + secs(5));
    assert_eq!(positions(&outs, k1), [(1, None)]);
    hub.resume(k2, 6, t0 + secs(6));
    let outs = found(&mut hub, k2, 6, Some(place(6, secs(0))), t0 + secs(6));
    assert_eq!(sent_to(&outs, k2), [HubMsg::CallEnded { call_id: 6, reason: EndReason::Unknown }]);
}

// ----- wrap-up -----

#[test]
fn agent_wraps_up_before_going_idle() {
    let (mut hub, t0) = Hub::new(QueueConfig { wrap_up: secs(30), ..QueueConfig::default() });
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));

    let outs = hub.hang_up(a1, call, t0 + secs(60));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::CallEnded { call_id: call, reason: EndReason::AgentHungUp }, room(RoomState::WrapUp)]
    );
    assert_eq!(sent_to(&outs, k1), [HubMsg::CallEnded { call_id: call, reason: EndReason::AgentHungUp }]);
    assert_eq!(deadline(&outs), Some(t0 + secs(90)));

    let outs = hub.tick(t0 + secs(89));
    assert!(sent_to(&outs, a1).is_empty());

    let outs = hub.tick(t0 + secs(90));
    assert_eq!(
        sent_to(&outs, a1),
        [
            room(RoomState::Idle),
            HubMsg::Offer { call_id: 2, kiosk: "k2".into(), waited_ms: 88_000, timeout_ms: 20_000 },
            room(RoomState::Offered),
        ]
    );
}

#[test]
fn agent_asking_close_during_a_call_goes_close_after_wrap_up() {
    let (mut hub, t0) = Hub::new(QueueConfig { wrap_up: secs(30), ..QueueConfig::default() });
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));

    let outs = hub.presence(a1, Presence::Close, t0 + secs(10));
    assert!(sent_to(&outs, a1).is_empty(), "still BUSY until the call ends");

    let outs = hub.hang_up(k1, call, t0 + secs(60));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::CallEnded { call_id: call, reason: EndReason::KioskHungUp }, room(RoomState::WrapUp)]
    );
    let outs = hub.tick(t0 + secs(90));
    assert_eq!(sent_to(&outs, a1), [room(RoomState::Close)]);
    assert_eq!(positions(&outs, k2), [(1, None)]);
}

#[test]
fn agent_asking_close_during_a_call_goes_close_when_it_ends_without_wrap_up() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));
    hub.presence(a1, Presence::Close, t0 + secs(10));

    let outs = hub.hang_up(a1, call, t0 + secs(60));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::CallEnded { call_id: call, reason: EndReason::AgentHungUp }, room(RoomState::Close)]
    );
    assert_eq!(deadline(&outs), None);
}

// ----- queue length, positions, estimates -----

#[test]
fn caller_beyond_max_queue_is_told_busy() {
    let (mut hub, t0) = Hub::new(QueueConfig { max_queue: 2, ..QueueConfig::default() });
    let (k1, k2, k3) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0));
    hub.request(k1, t0 + secs(1));
    hub.request(k2, t0 + secs(2));

    let outs = hub.request(k3, t0 + secs(3));
    assert_eq!(sent_to(&outs, k3), [HubMsg::Busy { retry_after_s: 60 }]);
    let busy = event(&outs, Event::RejectedBusy);
    assert_eq!((busy.call_id, busy.kiosk.as_deref()), (None, Some("k3")));
    assert_eq!(hub.q.stats().rejected_busy, 1);
    assert_eq!(hub.q.snapshot(t0 + secs(3)).waiting, 2);

    hub.hang_up(k1, 1, t0 + secs(4));
    let outs = hub.request(k3, t0 + secs(5));
    assert_eq!(sent_to(&outs, k3), [HubMsg::Queued { call_id: 3, position: 2, estimated_wait_s: None }]);
}

#[test]
fn positions_and_estimates_are_sent_when_they_change_and_only_then() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2, k3) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0));
    let first = hub.connected_call(k1, a1, t0 + secs(2)); // a1 BUSY

    let outs = hub.request(k2, t0 + secs(3));
    assert_eq!(positions(&outs, k2), [(1, Some(180))]);
    let queued = event(&outs, Event::Queued);
    assert_eq!((queued.call_id, queued.position), (Some(2), Some(1)));

    let outs = hub.request(k3, t0 + secs(4));
    assert_eq!((positions(&outs, k2), positions(&outs, k3)), (vec![], vec![(2, Some(360))]));

    // Nothing changes: nothing is sent.
    let a2 = hub.agent("a2", t0 + secs(5)); // CLOSE: not counted
    let outs = hub.tick(t0 + secs(6));
    assert_eq!(outs, [Output::Wait(None)]);

    // a2 takes k2's call: k3 stays second of the queue but two agents share it.
    let outs = hub.presence(a2, Presence::Idle, t0 + secs(7));
    assert_eq!(offered(&outs, a2), Some(2));
    assert_eq!((positions(&outs, k2), positions(&outs, k3)), (vec![], vec![(2, Some(180))]));

    let outs = hub.accept(a2, 2, t0 + secs(8));
    assert_eq!(positions(&outs, k3), [(1, Some(90))]);

    // a1 will close after its call: still counted while BUSY.
    let outs = hub.presence(a1, Presence::Close, t0 + secs(9));
    assert!(positions(&outs, k3).is_empty());

    // The first measured handle time (60 s) replaces the default; a1 is now CLOSE.
    let outs = hub.hang_up(a1, first, t0 + secs(62));
    assert_eq!(positions(&outs, k3), [(1, Some(60))]);
}

#[test]
fn estimate_is_none_while_no_agent_takes_calls() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let outs = hub.request(k2, t0 + secs(1));
    assert_eq!(positions(&outs, k2), [(1, None)]);

    let a1 = hub.agent("a1", t0 + secs(2));
    let outs = hub.tick(t0 + secs(2));
    assert!(positions(&outs, k2).is_empty(), "a CLOSE agent changes nothing");

    // a1 takes k2, then k1 waits behind nobody with a BUSY agent: an estimate.
    hub.presence(a1, Presence::Idle, t0 + secs(3));
    hub.accept(a1, 1, t0 + secs(3));
    let outs = hub.request(k1, t0 + secs(4));
    assert_eq!(positions(&outs, k1), [(1, Some(180))]);

    hub.presence(a1, Presence::Close, t0 + secs(5));
    let outs = hub.hang_up(k2, 1, t0 + secs(6));
    assert_eq!(positions(&outs, k1), [(1, None)]);
}

#[test]
fn asking_again_while_waiting_repeats_the_position() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let k1 = hub.kiosk("k1", t0);
    hub.request(k1, t0 + secs(1));
    let outs = hub.request(k1, t0 + secs(2));
    assert_eq!(sent_to(&outs, k1), [HubMsg::Queued { call_id: 1, position: 1, estimated_wait_s: None }]);
    assert!(events(&outs).is_empty(), "no second call");
    assert_eq!(hub.q.stats().queued, 1);
}

// ----- protocol discipline -----

#[test]
fn hello_with_the_wrong_role_is_fatal() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (k1, _) = hub.connect(Role::Kiosk, "k1", t0);
    let outs = hub.hello(k1, Role::Agent, t0);
    let msgs = sent_to(&outs, k1);
    assert!(matches!(msgs.as_slice(), [m] if is_error(m, true)), "{msgs:?}");
    assert!(closed(&outs, k1));
    assert_eq!(hub.q.stats().protocol_errors, 1);
    assert!(hub.q.snapshot(t0).agents.is_empty(), "no room for a kiosk");

    let outs = hub.disconnect(k1, t0);
    assert_eq!(outs, [Output::Wait(None)]);
}

#[test]
fn messages_before_hello_are_refused() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (k1, _) = hub.connect(Role::Kiosk, "k1", t0);
    let outs = hub.request(k1, t0);
    let msgs = sent_to(&outs, k1);
    assert!(matches!(msgs.as_slice(), [m] if is_error(m, true)), "{msgs:?}");
    assert!(closed(&outs, k1));
    assert!(events(&outs).is_empty(), "nobody queued");
    assert_eq!(hub.q.snapshot(t0).waiting, 0);
}

#[test]
fn kiosk_sending_agent_messages_is_closed() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let k1 = hub.kiosk("k1", t0);
    let outs = hub.accept(k1, 1, t0);
    let msgs = sent_to(&outs, k1);
    assert!(matches!(msgs.as_slice(), [m] if is_error(m, true)), "{msgs:?}");
    assert!(closed(&outs, k1));

    let k2 = hub.kiosk("k2", t0);
    let outs = hub.presence(k2, Presence::Idle, t0);
    assert!(closed(&outs, k2));
    assert!(hub.q.snapshot(t0).agents.is_empty());
}

#[test]
fn agent_asking_for_an_agent_is_closed() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.agent("a1", t0);
    let outs = hub.request(a1, t0);
    assert!(closed(&outs, a1));
    assert_eq!(hub.q.snapshot(t0).waiting, 0);
}

#[test]
fn second_hello_is_fatal() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let k1 = hub.kiosk("k1", t0);
    let outs = hub.hello(k1, Role::Kiosk, t0);
    assert!(closed(&outs, k1));
}

#[test]
fn hub_certificate_cannot_connect_as_a_client() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let (peer, outs) = hub.connect(Role::Hub, "hub", t0);
    assert!(closed(&outs, peer));
    let outs = hub.hello(peer, Role::Hub, t0);
    assert_eq!(outs, [Output::Wait(None)], "no welcome");
}

#[test]
fn second_kiosk_connection_with_the_same_identity_replaces_the_first() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let old = hub.kiosk("k1", t0);
    hub.request(old, t0 + secs(1));

    let (new, outs) = hub.connect(Role::Kiosk, "k1", t0 + secs(2));
    assert!(closed(&outs, old));
    assert_eq!(event_kinds(&outs), [Event::KioskAway]);
    hub.hello(new, Role::Kiosk, t0 + secs(2));
    let outs = hub.request(new, t0 + secs(2));
    assert_eq!(sent_to(&outs, new), [HubMsg::Queued { call_id: 1, position: 1, estimated_wait_s: None }]);
    assert_eq!(event_kinds(&outs), [Event::KioskBack]);

    // The old connection's end, reported late, changes nothing.
    let outs = hub.disconnect(old, t0 + secs(3));
    assert_eq!(outs, [Output::Wait(None)]);
    let a1 = hub.agent("a1", t0 + secs(4));
    let outs = hub.presence(a1, Presence::Idle, t0 + secs(4));
    assert_eq!((sent_to(&outs, old), sent_to(&outs, new)), (vec![], vec![HubMsg::Ringing { call_id: 1 }]));
}

#[test]
fn second_agent_connection_with_the_same_identity_replaces_the_first() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let old = hub.idle_agent("a1", t0);
    let (new, outs) = hub.connect(Role::Agent, "a1", t0 + secs(1));
    assert!(closed(&outs, old));
    assert!(event_kinds(&outs).contains(&Event::AgentOffline));
    hub.hello(new, Role::Agent, t0 + secs(1));
    hub.presence(new, Presence::Idle, t0 + secs(1));

    let k1 = hub.kiosk("k1", t0);
    let outs = hub.request(k1, t0 + secs(2));
    assert_eq!((offered(&outs, old), offered(&outs, new)), (None, Some(1)));
    assert_eq!(hub.q.snapshot(t0 + secs(2)).agents.values().sum::<usize>(), 1);
}

// ----- text -----

#[test]
fn texts_and_acks_are_relayed_both_ways() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));

    let outs = hub.text(k1, call, 1, "Bonjour", t0 + secs(2));
    assert_eq!(sent_to(&outs, a1), [HubMsg::Text { call_id: call, id: 1, body: "Bonjour".into() }]);
    let outs = hub.send(a1, ClientMsg::TextAck { call_id: call, id: 1 }, t0 + secs(3));
    assert_eq!(sent_to(&outs, k1), [HubMsg::TextAck { call_id: call, id: 1 }]);

    let outs = hub.text(a1, call, 1, "Hello\nhow can I help?", t0 + secs(4));
    assert_eq!(
        sent_to(&outs, k1),
        [HubMsg::Text { call_id: call, id: 1, body: "Hello\nhow can I help?".into() }]
    );
    let outs = hub.send(k1, ClientMsg::TextAck { call_id: call, id: 1 }, t0 + secs(5));
    assert_eq!(sent_to(&outs, a1), [HubMsg::TextAck { call_id: call, id: 1 }]);

    assert_eq!(hub.q.stats().texts_relayed, 2);
}

#[test]
fn texts_from_outside_the_call_get_a_non_fatal_error() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    let (k2, a2) = (hub.kiosk("k2", t0), hub.agent("a2", t0));
    hub.request(k2, t0 + secs(2)); // call 2, waiting

    for (peer, call_id) in [(k2, call), (a2, call), (k1, 99), (k2, 2), (a1, 2)] {
        let outs = hub.text(peer, call_id, 1, "psst", t0 + secs(3));
        let msgs = sent_to(&outs, peer);
        assert!(matches!(msgs.as_slice(), [m] if is_error(m, false)), "{peer} on call {call_id}: {msgs:?}");
        assert!(!closed(&outs, peer));
        assert!(!outs.iter().any(|o| matches!(o, Output::Send { msg: HubMsg::Text { .. }, .. })));
    }
    assert_eq!(hub.q.stats().texts_relayed, 0);
}

#[test]
fn agent_texts_to_an_away_kiosk_are_not_delivered() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    hub.disconnect(k1, t0 + secs(2));

    let outs = hub.text(a1, call, 1, "still there?", t0 + secs(3));
    assert_eq!(outs, [Output::Wait(Some(t0 + secs(12)))]);
}

// ----- shutdown -----

#[test]
fn shutdown_ends_every_call() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2, k3) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0));
    let connected = hub.connected_call(k1, a1, t0 + secs(1));
    let a2 = hub.idle_agent("a2", t0 + secs(2));
    let outs = hub.request(k2, t0 + secs(3));
    let ringing = offered(&outs, a2).expect("offered to a2");
    let outs = hub.request(k3, t0 + secs(4));
    let waiting = 3;
    let behind_the_ringing_call =
        HubMsg::Queued { call_id: waiting, position: 2, estimated_wait_s: Some(180) };
    assert_eq!(sent_to(&outs, k3), [behind_the_ringing_call]);

    let outs = hub.input(Input::Shutdown, t0 + secs(5));
    let ended = |call_id| HubMsg::CallEnded { call_id, reason: EndReason::HubShutdown };
    assert_eq!(sent_to(&outs, k1), [ended(connected)]);
    assert_eq!(sent_to(&outs, k2), [ended(ringing)]);
    assert_eq!(sent_to(&outs, k3), [ended(waiting)]);
    assert_eq!(sent_to(&outs, a1), [ended(connected), room(RoomState::Idle)]);
    assert!(
        sent_to(&outs, a2)
            .iter()
            .any(|m| matches!(m, HubMsg::OfferWithdrawn { call_id, .. } if *call_id == ringing)),
        "the offer is taken back"
    );
    let finished: Vec<_> = events(&outs)
        .into_iter()
        .filter(|rec| matches!(rec.event, Event::Ended | Event::Abandoned))
        .map(|rec| (rec.call_id, rec.event, rec.detail))
        .collect();
    let hub_shutdown = Some("hub_shutdown".to_string());
    assert_eq!(
        finished,
        [
            (Some(connected), Event::Ended, hub_shutdown.clone()),
            (Some(ringing), Event::Abandoned, hub_shutdown.clone()),
            (Some(waiting), Event::Abandoned, hub_shutdown),
        ]
    );
    assert_eq!(event_kinds(&outs).last(), Some(&Event::HubStopped));
    let snap = hub.q.snapshot(t0 + secs(5));
    assert_eq!((snap.waiting, snap.calls_connected), (0, 0));
    assert_eq!(deadline(&outs), None);
}

#[test]
fn inputs_without_draining_are_a_contract_error() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let k1 = hub.kiosk("k1", t0);
    hub.request(k1, t0);
    // Asking again re-sends the position: one output per input, never drained.
    let ask = Input::Message { peer: k1, msg: ClientMsg::RequestAgent { resume: None, consent: false } };
    for _ in 0..=MAX_PENDING_OUTPUTS {
        hub.q.handle_input(ask.clone(), t0).unwrap();
    }
    assert_eq!(hub.q.handle_input(Input::Tick, t0), Err(QueueError::NotDrained(MAX_PENDING_OUTPUTS + 1)));
    assert_eq!(drain(&mut hub.q).len(), MAX_PENDING_OUTPUTS + 2);
    assert_eq!(hub.q.handle_input(Input::Tick, t0), Ok(()));
}

// ----- the event log -----

fn log_line(ts_ms: u64, event: Event, call_id: CallId, kiosk: &str, agent: Option<&str>) -> String {
    let rec = EventRecord {
        ts_ms,
        event,
        call_id: Some(call_id),
        kiosk: Some(kiosk.into()),
        agent: agent.map(str::to_string),
        detail: None,
        position: None,
        moved: None,
    };
    serde_json::to_string(&rec).unwrap()
}

fn to_lines(log: &[EventRecord]) -> Vec<String> {
    log.iter().map(|rec| serde_json::to_string(rec).unwrap()).collect()
}

#[test]
fn restore_continues_call_ids_and_closes_calls_left_open() {
    let lines = [
        log_line(1_000, Event::Queued, 7, "k7", None),
        log_line(2_000, Event::Connected, 7, "k7", Some("a1")),
        log_line(62_000, Event::Ended, 7, "k7", Some("a1")),
        log_line(70_000, Event::Queued, 8, "k8", None),
        log_line(71_000, Event::Connected, 8, "k8", Some("a2")),
        log_line(80_000, Event::Queued, 9, "k9", None),
    ];
    let summary = LogSummary::from_lines(lines.iter().map(String::as_str));
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    hub.q.restore(&summary, t0);
    let outs = drain(&mut hub.q);

    let closing = |event, call_id, kiosk: &str, agent: Option<&str>| EventRecord {
        ts_ms: T0_UNIX_MS,
        event,
        call_id: Some(call_id),
        kiosk: Some(kiosk.into()),
        agent: agent.map(str::to_string),
        detail: Some("hub_restart".into()),
        position: None,
        moved: None,
    };
    let started = EventRecord {
        ts_ms: T0_UNIX_MS,
        event: Event::HubStarted,
        call_id: None,
        kiosk: None,
        agent: None,
        detail: None,
        position: None,
        moved: None,
    };
    assert_eq!(
        events(&outs),
        [closing(Event::Ended, 8, "k8", Some("a2")), closing(Event::Abandoned, 9, "k9", None), started]
    );

    // Replayed, the log has no open call any more.
    let mut all = lines.to_vec();
    all.extend(to_lines(&events(&outs)));
    assert_eq!(LogSummary::from_lines(all.iter().map(String::as_str)).open_calls().count(), 0);

    // Call ids go on after the last one; the estimate uses the measured 60 s handle time.
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2) = (hub.kiosk("k1", t0), hub.kiosk("k2", t0));
    let outs = hub.request(k1, t0 + secs(1));
    assert_eq!(offered(&outs, a1), Some(10));
    hub.accept(a1, 10, t0 + secs(1));
    let outs = hub.request(k2, t0 + secs(2));
    assert_eq!(sent_to(&outs, k2), [HubMsg::Queued { call_id: 11, position: 1, estimated_wait_s: Some(60) }]);
}

#[test]
fn replayed_event_log_reports_the_scenario() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let (k1, k2, k3, k4) =
        (hub.kiosk("k1", t0), hub.kiosk("k2", t0), hub.kiosk("k3", t0), hub.kiosk("k4", t0));

    hub.request(k1, t0 + secs(10));
    hub.accept(a1, 1, t0 + secs(15)); // waited 5 s
    hub.request(k2, t0 + secs(20));
    hub.hang_up(k2, 2, t0 + secs(50)); // abandoned after 30 s
    hub.hang_up(a1, 1, t0 + secs(75)); // handled 60 s
    hub.request(k3, t0 + secs(80));
    hub.accept(a1, 3, t0 + secs(82)); // waited 2 s
    hub.hang_up(k3, 3, t0 + secs(112)); // handled 30 s
    hub.request(k4, t0 + secs(120));
    hub.tick(t0 + secs(140)); // a1 does not answer: call 4 still waiting

    let text = to_lines(&hub.log).join("\n");
    let summary = LogSummary::from_lines(text.lines());
    let report = summary.report();
    assert_eq!(
        (report.calls, report.answered, report.abandoned, report.open, report.bad_lines),
        (4, 2, 1, 1, 0)
    );
    assert_eq!((report.wait_ms.count, report.wait_ms.p50, report.wait_ms.max), (2, 2_000.0, 5_000.0));
    assert_eq!((report.handle_ms.count, report.handle_ms.p50, report.handle_ms.max), (2, 30_000.0, 60_000.0));
    assert_eq!(summary.calls[&2].waiting(), Some(secs(30)));
    assert_eq!(summary.calls[&2].reason.as_deref(), Some("kiosk_hung_up"));
    assert_eq!(summary.calls[&1].agent.as_deref(), Some("a1"));
    assert_eq!(summary.open_calls().map(|(id, _)| id).collect::<Vec<_>>(), [4]);
    assert_eq!(summary.next_call_id(), 5);
    assert_eq!(summary.recent_handle_times(20), [secs(60), secs(30)]);
}

// ----- random inputs -----

const KIOSKS: usize = 4;
const AGENTS: usize = 3;

/// One thing that can happen to the hub. `call: None` means the call the peer knows of.
#[derive(Debug, Clone)]
enum Op {
    ConnectKiosk {
        kiosk: usize,
        hello: bool,
    },
    ConnectAgent {
        agent: usize,
        hello: bool,
    },
    DisconnectKiosk(usize),
    DisconnectAgent(usize),
    Request {
        kiosk: usize,
        resume: bool,
    },
    KioskHangUp {
        kiosk: usize,
        call: Option<CallId>,
    },
    Accept {
        agent: usize,
        call: Option<CallId>,
    },
    Decline {
        agent: usize,
        call: Option<CallId>,
    },
    AgentHangUp {
        agent: usize,
        call: Option<CallId>,
    },
    Presence {
        agent: usize,
        idle: bool,
    },
    KioskText {
        kiosk: usize,
        call: Option<CallId>,
    },
    AgentText {
        agent: usize,
        call: Option<CallId>,
    },
    KioskAccepts(usize),
    /// Time passes by this many milliseconds, then a tick.
    Advance(u64),
    /// Time jumps to the core's deadline, then a tick.
    TickAtDeadline,
    /// Time passes by this many milliseconds without a tick: the next input comes late.
    Late(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let kiosk = 0..KIOSKS;
    let agent = 0..AGENTS;
    let call = || prop_oneof![6 => Just(None), 1 => (1..8u64).prop_map(Some)];
    prop_oneof![
        3 => (kiosk.clone(), prop::bool::weighted(0.95)).prop_map(|(kiosk, hello)| Op::ConnectKiosk { kiosk, hello }),
        2 => (agent.clone(), prop::bool::weighted(0.95)).prop_map(|(agent, hello)| Op::ConnectAgent { agent, hello }),
        1 => kiosk.clone().prop_map(Op::DisconnectKiosk),
        1 => agent.clone().prop_map(Op::DisconnectAgent),
        6 => (kiosk.clone(), prop::bool::weighted(0.3)).prop_map(|(kiosk, resume)| Op::Request { kiosk, resume }),
        2 => (kiosk.clone(), call()).prop_map(|(kiosk, call)| Op::KioskHangUp { kiosk, call }),
        6 => (agent.clone(), call()).prop_map(|(agent, call)| Op::Accept { agent, call }),
        2 => (agent.clone(), call()).prop_map(|(agent, call)| Op::Decline { agent, call }),
        2 => (agent.clone(), call()).prop_map(|(agent, call)| Op::AgentHangUp { agent, call }),
        5 => (agent.clone(), prop::bool::weighted(0.8)).prop_map(|(agent, idle)| Op::Presence { agent, idle }),
        2 => (kiosk.clone(), call()).prop_map(|(kiosk, call)| Op::KioskText { kiosk, call }),
        2 => (agent, call()).prop_map(|(agent, call)| Op::AgentText { agent, call }),
        1 => kiosk.prop_map(Op::KioskAccepts),
        3 => (0..2_000u64).prop_map(Op::Advance),
        2 => (0..30_000u64).prop_map(Op::Advance),
        2 => Just(Op::TickAtDeadline),
        1 => (0..15_000u64).prop_map(Op::Late),
    ]
}

fn random_config() -> impl Strategy<Value = QueueConfig> {
    let maybe_zero = || prop_oneof![Just(0), 1..20u64];
    (1..30u64, maybe_zero(), maybe_zero(), 1..5usize).prop_map(|(offer, wrap, grace, max_queue)| {
        QueueConfig {
            max_queue,
            offer_timeout: secs(offer),
            wrap_up: secs(wrap),
            kiosk_grace: secs(grace),
            ..QueueConfig::default()
        }
    })
}

/// A peer as a client sees it: what it was told.
#[derive(Debug)]
struct Client {
    role: Role,
    index: usize,
    /// Still connected as far as the driver knows.
    live: bool,
    /// `Disconnected` was fed for it.
    gone: bool,
    /// Agent: the call offered to it or connected.
    call: Option<CallId>,
    /// Kiosk: the last (position, estimate) per call.
    queued: HashMap<CallId, (u32, Option<u32>)>,
}

/// Drives the core like a hub would (closing peers it is told to close) and checks its
/// promises after every input.
struct Driver {
    hub: Hub,
    now: Instant,
    kiosks: [Option<PeerId>; KIOSKS],
    agents: [Option<PeerId>; AGENTS],
    /// The call each kiosk last heard of, kept across reconnects for `resume`.
    kiosk_calls: [Option<CallId>; KIOSKS],
    clients: HashMap<PeerId, Client>,
}

impl Driver {
    fn new(config: QueueConfig) -> Self {
        let (hub, t0) = Hub::new(config);
        Driver {
            hub,
            now: t0,
            kiosks: [None; KIOSKS],
            agents: [None; AGENTS],
            kiosk_calls: [None; KIOSKS],
            clients: HashMap::new(),
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::ConnectKiosk { kiosk, hello } => self.connect(Role::Kiosk, kiosk, hello),
            Op::ConnectAgent { agent, hello } => self.connect(Role::Agent, agent, hello),
            Op::DisconnectKiosk(i) => {
                if let Some(peer) = self.kiosks[i] {
                    self.disconnect(peer);
                }
            }
            Op::DisconnectAgent(i) => {
                if let Some(peer) = self.agents[i] {
                    self.disconnect(peer);
                }
            }
            Op::Request { kiosk, resume } => {
                if let Some(peer) = self.kiosks[kiosk] {
                    // The hub tells the state again: a repeat is expected.
                    self.clients.get_mut(&peer).unwrap().queued.clear();
                    let resume = if resume { self.kiosk_calls[kiosk] } else { None };
                    self.message(peer, ClientMsg::RequestAgent { resume, consent: false });
                }
            }
            Op::KioskHangUp { kiosk, call } => {
                if let Some(peer) = self.kiosks[kiosk] {
                    let call_id = call.or(self.kiosk_calls[kiosk]).unwrap_or(1);
                    self.message(peer, ClientMsg::HangUp { call_id });
                }
            }
            Op::Accept { agent, call } => {
                self.agent_says(agent, call, |call_id| ClientMsg::Accept { call_id })
            }
            Op::Decline { agent, call } => {
                self.agent_says(agent, call, |call_id| ClientMsg::Decline { call_id })
            }
            Op::AgentHangUp { agent, call } => {
                self.agent_says(agent, call, |call_id| ClientMsg::HangUp { call_id })
            }
            Op::Presence { agent, idle } => {
                if let Some(peer) = self.agents[agent] {
                    let presence = if idle { Presence::Idle } else { Presence::Close };
                    self.message(peer, ClientMsg::SetPresence { presence });
                }
            }
            Op::KioskText { kiosk, call } => {
                if let Some(peer) = self.kiosks[kiosk] {
                    let call_id = call.or(self.kiosk_calls[kiosk]).unwrap_or(1);
                    self.message(peer, ClientMsg::Text { call_id, id: 1, body: "hi".into() });
                }
            }
            Op::AgentText { agent, call } => {
                self.agent_says(agent, call, |call_id| ClientMsg::Text { call_id, id: 1, body: "hi".into() })
            }
            Op::KioskAccepts(i) => {
                if let Some(peer) = self.kiosks[i] {
                    let outs = self.message(peer, ClientMsg::Accept { call_id: 1 });
                    assert!(closed(&outs, peer), "a kiosk may not accept calls");
                }
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(ms);
                self.tick();
            }
            Op::Late(ms) => self.now += Duration::from_millis(ms),
            Op::TickAtDeadline => {
                if let Some(at) = self.hub.q.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.tick();
            }
        }
        self.check_state();
    }

    /// The hub stops: nothing is left, neither waiting nor in a call.
    fn shut_down(&mut self) {
        self.feed(Input::Shutdown);
        self.check_state();
        assert!(self.hub.q.calls.is_empty() && self.hub.q.queue.is_empty());
        let snap = self.hub.q.snapshot(self.now);
        assert_eq!((snap.waiting, snap.calls_connected), (0, 0));
    }

    fn connect(&mut self, role: Role, index: usize, hello: bool) {
        let slot = match role {
            Role::Kiosk => &mut self.kiosks[index],
            _ => &mut self.agents[index],
        };
        // A new connection with the same certificate replaces the old one.
        if let Some(old) = slot.take() {
            self.clients.get_mut(&old).unwrap().live = false;
        }
        let peer = self.hub.next_peer;
        let id = match role {
            Role::Kiosk => format!("k{index}"),
            _ => format!("a{index}"),
        };
        self.clients.insert(
            peer,
            Client { role, index, live: true, gone: false, call: None, queued: HashMap::new() },
        );
        match role {
            Role::Kiosk => self.kiosks[index] = Some(peer),
            _ => self.agents[index] = Some(peer),
        }
        self.hub.next_peer += 1;
        self.feed(Input::Connected { peer, role, id });
        if hello {
            let outs = self.message(peer, ClientMsg::Hello { role, software: "proptest".into() });
            assert!(
                sent_to(&outs, peer).first().is_some_and(|m| matches!(m, HubMsg::Welcome { .. })),
                "hello with the right role is welcomed"
            );
        }
    }

    fn disconnect(&mut self, peer: PeerId) {
        self.forget(peer);
        self.feed(Input::Disconnected { peer });
    }

    /// The peer is gone for the driver; true if its `Disconnected` is still to be fed.
    fn forget(&mut self, peer: PeerId) -> bool {
        let client = self.clients.get_mut(&peer).unwrap();
        client.live = false;
        let slot = match client.role {
            Role::Kiosk => &mut self.kiosks[client.index],
            _ => &mut self.agents[client.index],
        };
        if *slot == Some(peer) {
            *slot = None;
        }
        !std::mem::replace(&mut client.gone, true)
    }

    fn agent_says(&mut self, agent: usize, call: Option<CallId>, msg: impl FnOnce(CallId) -> ClientMsg) {
        if let Some(peer) = self.agents[agent] {
            let call_id = call.or(self.clients[&peer].call).unwrap_or(1);
            self.message(peer, msg(call_id));
        }
    }

    fn message(&mut self, peer: PeerId, msg: ClientMsg) -> Vec<Output> {
        self.feed(Input::Message { peer, msg })
    }

    fn tick(&mut self) {
        self.feed(Input::Tick);
        let next = self.hub.q.poll_timeout();
        assert!(
            next.is_none_or(|at| at > self.now),
            "deadline {next:?} not after the tick at {:?}",
            self.now
        );
    }

    /// Feeds `input`, then `Disconnected` for every peer the core closed, as a hub would.
    fn feed(&mut self, input: Input) -> Vec<Output> {
        let mut inputs = VecDeque::from([input]);
        let mut all = Vec::new();
        while let Some(input) = inputs.pop_front() {
            let outs = self.hub.input(input, self.now);
            self.observe(&outs);
            for out in &outs {
                if let Output::Close { peer, .. } = out
                    && self.clients.contains_key(peer)
                    && self.forget(*peer)
                {
                    inputs.push_back(Input::Disconnected { peer: *peer });
                }
            }
            all.extend(outs);
        }
        all
    }

    /// Checks what the clients are told, message by message, and updates their view.
    fn observe(&mut self, outs: &[Output]) {
        assert_eq!(deadline(outs), self.hub.q.poll_timeout());
        let queue_len = self.hub.q.queue.len() as u32;
        let mut offers = Vec::new();
        for out in outs {
            let Output::Send { peer, msg } = out else {
                continue;
            };
            let client = &self.clients[peer];
            let teardown =
                matches!(msg, HubMsg::CallEnded { .. } | HubMsg::Room { .. } | HubMsg::OfferWithdrawn { .. });
            assert!(client.live || teardown, "{msg:?} sent to closed peer {peer}");
            match (client.role, msg) {
                (Role::Agent, HubMsg::Offer { call_id, .. }) => {
                    assert_eq!(client.call, None, "agent {peer} offered {call_id} while holding a call");
                    let others = self.clients.iter().filter(|(p, c)| {
                        *p != peer && c.live && c.role == Role::Agent && c.call == Some(*call_id)
                    });
                    assert_eq!(others.count(), 0, "call {call_id} offered to two agents");
                    offers.push((*call_id, format!("a{}", client.index)));
                    self.clients.get_mut(peer).unwrap().call = Some(*call_id);
                }
                (Role::Agent, HubMsg::OfferWithdrawn { call_id, .. } | HubMsg::CallEnded { call_id, .. }) => {
                    let client = self.clients.get_mut(peer).unwrap();
                    if client.call == Some(*call_id) {
                        client.call = None;
                    }
                }
                (
                    Role::Agent,
                    HubMsg::Room { state: RoomState::Idle | RoomState::Close | RoomState::WrapUp },
                ) => {
                    self.clients.get_mut(peer).unwrap().call = None;
                }
                (Role::Kiosk, HubMsg::Queued { call_id, position, estimated_wait_s }) => {
                    assert!((1..=queue_len).contains(position), "position {position} of {queue_len}");
                    let told = (*position, *estimated_wait_s);
                    let client = self.clients.get_mut(peer).unwrap();
                    let before = client.queued.insert(*call_id, told);
                    assert_ne!(before, Some(told), "unchanged position repeated to {peer}");
                    self.kiosk_calls[client.index] = Some(*call_id);
                }
                (Role::Kiosk, HubMsg::Ringing { call_id } | HubMsg::Connected { call_id, .. }) => {
                    let client = self.clients.get_mut(peer).unwrap();
                    client.queued.remove(call_id); // back in the queue, the position is told again
                    self.kiosk_calls[client.index] = Some(*call_id);
                }
                (Role::Kiosk, HubMsg::CallEnded { call_id, .. }) => {
                    let index = client.index;
                    if self.kiosk_calls[index] == Some(*call_id) {
                        self.kiosk_calls[index] = None;
                    }
                }
                _ => {}
            }
        }
        // First come, first served: every caller ahead of an offered one is ringing, away,
        // or was refused by that agent.
        let q = &self.hub.q;
        for (call_id, agent) in offers {
            for ahead in q.queue.iter().take_while(|&&id| id != call_id) {
                let call = &q.calls[ahead];
                if call.phase == Phase::Queued && call.away_until.is_none() {
                    assert!(
                        call.declined_by.contains(&agent),
                        "call {call_id} offered to {agent} before call {ahead}"
                    );
                }
            }
        }
    }

    /// The core's own state agrees with itself and with what the clients were told.
    fn check_state(&self) {
        let q = &self.hub.q;
        let mut in_queue = HashSet::new();
        for id in &q.queue {
            assert!(in_queue.insert(*id), "call {id} twice in the queue");
            assert!(q.calls.contains_key(id), "queued call {id} unknown");
        }
        let mut busy_agents = HashSet::new();
        let mut kiosks_in_calls = HashSet::new();
        for (id, call) in &q.calls {
            assert!(kiosks_in_calls.insert(&call.kiosk), "kiosk {} in two calls", call.kiosk);
            if call.away_until.is_none() {
                assert!(q.kiosks.contains_key(&call.kiosk), "call {id}: kiosk gone but not away");
            }
            match &call.phase {
                Phase::Queued => {
                    assert!(in_queue.contains(id), "call {id} waiting outside the queue")
                }
                Phase::Offered { agent, .. } => {
                    assert!(in_queue.contains(id), "offered call {id} left the queue");
                    assert!(call.away_until.is_none(), "call {id} offered while its kiosk is away");
                    assert!(
                        !call.declined_by.contains(agent),
                        "call {id} offered to {agent} who declined it"
                    );
                    assert!(busy_agents.insert(agent), "agent {agent} has two calls");
                    let room = &q.rooms[agent];
                    assert_eq!((room.state, room.call), (RoomState::Offered, Some(*id)));
                }
                Phase::Connected { agent, .. } => {
                    assert!(!in_queue.contains(id), "connected call {id} still queued");
                    assert!(busy_agents.insert(agent), "agent {agent} has two calls");
                    let room = &q.rooms[agent];
                    assert_eq!((room.state, room.call), (RoomState::Busy, Some(*id)));
                }
            }
        }
        for (agent, room) in &q.rooms {
            let holds_call = matches!(room.state, RoomState::Offered | RoomState::Busy);
            assert_eq!(room.call.is_some(), holds_call, "agent {agent}: {room:?}");
            assert_eq!(room.wrap_until.is_some(), room.state == RoomState::WrapUp, "agent {agent}: {room:?}");
        }
        // No caller waits while an IDLE agent could take it.
        for (id, call) in &q.calls {
            if call.phase == Phase::Queued && call.away_until.is_none() {
                for (agent, room) in &q.rooms {
                    assert!(
                        room.state != RoomState::Idle || call.declined_by.contains(agent),
                        "call {id} waits while {agent} is IDLE"
                    );
                }
            }
        }
        // Every caller waiting (not ringing, not away) knows its current place.
        let taking_calls = q.rooms.values().any(|r| r.state != RoomState::Close);
        for (idx, id) in q.queue.iter().enumerate() {
            let call = &q.calls[id];
            if call.phase != Phase::Queued || call.away_until.is_some() {
                continue;
            }
            let peer = q.kiosks[&call.kiosk];
            let told = self.clients[&peer].queued.get(id).copied();
            let (position, estimate) =
                told.unwrap_or_else(|| panic!("call {id}: kiosk never told its place"));
            assert_eq!(position, idx as u32 + 1, "call {id}: stale position");
            assert_eq!(estimate.is_some(), taking_calls, "call {id}: estimate {estimate:?}");
            assert_eq!(call.told, told, "call {id}: told differs from what was sent");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x6b69_6f73_6b64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_inputs_keep_the_queue_consistent(
        config in random_config(),
        ops in prop::collection::vec(op(), 1..150),
        shutdown in any::<bool>(),
    ) {
        let mut driver = Driver::new(config);
        for op in ops {
            driver.step(op);
        }
        if shutdown {
            driver.shut_down();
        }
    }
}

// ----- recording -----

/// A hub that records, a kiosk asking with or without consent, an agent accepting.
fn recording_call(record_calls: bool, consent: bool) -> (Hub, Instant, PeerId, PeerId, Vec<Output>) {
    let (mut hub, t0) = Hub::new(QueueConfig { record_calls, ..QueueConfig::default() });
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let outs = hub.send(k1, ClientMsg::RequestAgent { resume: None, consent }, t0 + secs(1));
    let call_id = offered(&outs, a1).expect("offered");
    let outs = hub.accept(a1, call_id, t0 + secs(2));
    (hub, t0, k1, a1, outs)
}

fn recording_outputs(outs: &[Output]) -> Vec<Output> {
    outs.iter()
        .filter(|o| matches!(o, Output::StartRecording { .. } | Output::StopRecording { .. }))
        .cloned()
        .collect()
}

#[test]
fn a_consenting_call_on_a_recording_hub_is_recorded_and_both_parties_are_told() {
    let (mut hub, t0, k1, a1, outs) = recording_call(true, true);
    assert_eq!(sent_to(&outs, k1), [HubMsg::Connected { call_id: 1, peer: "a1".into(), recorded: true }]);
    assert!(sent_to(&outs, a1).contains(&HubMsg::Connected {
        call_id: 1,
        peer: "k1".into(),
        recorded: true
    }));
    assert_eq!(event(&outs, Event::Connected).detail.as_deref(), Some("recorded"));
    // The recording starts before the media is routed, so that no frame passes unrecorded.
    let start = outs.iter().position(|o| matches!(o, Output::StartRecording { .. })).expect("start");
    let route = outs.iter().position(|o| matches!(o, Output::Route { .. })).expect("route");
    assert!(start < route, "{outs:#?}");
    assert_eq!(
        recording_outputs(&outs),
        [Output::StartRecording { call_id: 1, kiosk: "k1".into(), agent: "a1".into() }]
    );
    let outs = hub.hang_up(k1, 1, t0 + secs(30));
    assert_eq!(recording_outputs(&outs), [Output::StopRecording { call_id: 1 }]);
}

#[test]
fn nothing_is_recorded_without_consent_or_without_the_hub_setting() {
    for (record_calls, consent) in [(true, false), (false, true), (false, false)] {
        let (mut hub, t0, k1, _a1, outs) = recording_call(record_calls, consent);
        assert_eq!(
            sent_to(&outs, k1),
            [HubMsg::Connected { call_id: 1, peer: "a1".into(), recorded: false }]
        );
        assert!(recording_outputs(&outs).is_empty(), "{record_calls} {consent}: {outs:#?}");
        let outs = hub.hang_up(k1, 1, t0 + secs(30));
        assert!(recording_outputs(&outs).is_empty());
    }
}

#[test]
fn a_resumed_recorded_call_is_still_shown_as_recorded_and_not_restarted() {
    let (mut hub, t0, k1, a1, _) = recording_call(true, true);
    hub.disconnect(k1, t0 + secs(5));
    let k1b = hub.kiosk("k1", t0 + secs(6));
    let outs = hub.send(k1b, ClientMsg::RequestAgent { resume: Some(1), consent: true }, t0 + secs(6));
    assert!(sent_to(&outs, k1b).contains(&HubMsg::Connected {
        call_id: 1,
        peer: "a1".into(),
        recorded: true
    }));
    assert!(recording_outputs(&outs).is_empty(), "the recording goes on: {outs:#?}");
    // The agent hanging up stops it.
    let outs = hub.hang_up(a1, 1, t0 + secs(20));
    assert_eq!(recording_outputs(&outs), [Output::StopRecording { call_id: 1 }]);
}

// ----- media feedback -----

#[test]
fn loss_reports_go_to_the_other_party_of_a_connected_call_only() {
    let (mut hub, t0) = Hub::new(QueueConfig::default());
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call = hub.connected_call(k1, a1, t0 + secs(1));
    let outs = hub.send(k1, ClientMsg::LossReport { call_id: call, audio_loss_pct: 250 }, t0 + secs(2));
    assert_eq!(
        sent_to(&outs, a1),
        [HubMsg::LossReport { call_id: call, audio_loss_pct: 100 }],
        "capped at 100"
    );
    assert!(sent_to(&outs, k1).is_empty());
    let outs = hub.send(a1, ClientMsg::LossReport { call_id: call, audio_loss_pct: 3 }, t0 + secs(2));
    assert_eq!(sent_to(&outs, k1), [HubMsg::LossReport { call_id: call, audio_loss_pct: 3 }]);
    hub.hang_up(k1, call, t0 + secs(3));
    // Crossing a hang-up: moot, no error.
    let outs = hub.send(a1, ClientMsg::LossReport { call_id: call, audio_loss_pct: 3 }, t0 + secs(4));
    assert!(sent_to(&outs, a1).is_empty() && sent_to(&outs, k1).is_empty(), "{outs:#?}");
}

// ----- flood limits -----

#[test]
fn a_kiosk_asking_for_calls_too_often_is_told_busy_and_rings_no_agent() {
    let config = QueueConfig { call_requests: Rate::per_minute(3), ..QueueConfig::default() };
    let (mut hub, t0) = Hub::new(config);
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let k2 = hub.kiosk("k2", t0);
    // Three fresh requests (each hung up again) are allowed within the minute ...
    for i in 0..3u64 {
        let outs = hub.request(k1, t0 + secs(i));
        let call_id = offered(&outs, a1).expect("offered");
        hub.hang_up(k1, call_id, t0 + secs(i));
    }
    // ... the fourth is told busy, for the 20 s until the next is allowed, and no call is made.
    let outs = hub.request(k1, t0 + secs(3));
    assert_eq!(sent_to(&outs, k1), [HubMsg::Busy { retry_after_s: 17 }]);
    assert_eq!(offered(&outs, a1), None);
    assert!(event_kinds(&outs).is_empty(), "a refused request writes nothing to the event log");
    assert_eq!(hub.q.stats().call_requests_limited, 1);
    assert_eq!(hub.q.stats().queued, 3);
    // Another kiosk is not affected.
    assert!(offered(&hub.request(k2, t0 + secs(3)), a1).is_some());
    hub.hang_up(k2, 4, t0 + secs(3));
    // Twenty seconds on, one more request from k1 is taken.
    assert!(offered(&hub.request(k1, t0 + secs(20)), a1).is_some());
}

#[test]
fn repeating_a_request_while_waiting_is_not_a_new_request() {
    let config = QueueConfig { call_requests: Rate::per_minute(1), ..QueueConfig::default() };
    let (mut hub, t0) = Hub::new(config);
    let k1 = hub.kiosk("k1", t0);
    hub.request(k1, t0);
    for i in 1..10 {
        let outs = hub.request(k1, t0 + secs(i));
        assert!(!sent_to(&outs, k1).iter().any(|m| matches!(m, HubMsg::Busy { .. })), "{outs:#?}");
    }
    assert_eq!(hub.q.stats().call_requests_limited, 0);
}

#[test]
fn texts_past_the_rate_are_refused_to_their_sender_and_not_relayed() {
    let config = QueueConfig { texts: Rate::per_minute(5), ..QueueConfig::default() };
    let (mut hub, t0) = Hub::new(config);
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let call_id = hub.connected_call(k1, a1, t0);
    for id in 0..5 {
        let outs = hub.text(k1, call_id, id, "hello", t0);
        assert_eq!(sent_to(&outs, a1).len(), 1, "text {id} relayed");
    }
    let outs = hub.text(k1, call_id, 5, "hello", t0);
    assert!(sent_to(&outs, a1).is_empty(), "the sixth is not relayed");
    let to_kiosk = sent_to(&outs, k1);
    assert!(matches!(&to_kiosk[..], [m] if is_error(m, false)), "{to_kiosk:?}");
    // The other side has its own allowance.
    assert_eq!(sent_to(&hub.text(a1, call_id, 1, "hi", t0), k1).len(), 1);
    assert_eq!(hub.q.stats().texts_limited, 1);
    assert_eq!(hub.q.stats().texts_relayed, 6);
    // Twelve seconds later one more is taken.
    assert_eq!(sent_to(&hub.text(k1, call_id, 6, "again", t0 + secs(12)), a1).len(), 1);
}

#[test]
fn a_new_call_starts_with_a_fresh_text_allowance() {
    let config = QueueConfig { texts: Rate::per_minute(1), ..QueueConfig::default() };
    let (mut hub, t0) = Hub::new(config);
    let a1 = hub.idle_agent("a1", t0);
    let k1 = hub.kiosk("k1", t0);
    let first = hub.connected_call(k1, a1, t0);
    hub.text(k1, first, 0, "one", t0);
    assert!(sent_to(&hub.text(k1, first, 1, "two", t0), a1).is_empty());
    hub.hang_up(k1, first, t0);
    let second = hub.connected_call(k1, a1, t0 + secs(1));
    assert_eq!(sent_to(&hub.text(k1, second, 0, "one", t0 + secs(1)), a1).len(), 1);
}

#[test]
fn with_a_shared_database_a_recorded_call_is_recorded_again_after_a_restart() {
    let recorded_line = |call_id, kiosk: &str, agent| {
        let mut rec: EventRecord =
            serde_json::from_str(&log_line(2_000, Event::Connected, call_id, kiosk, Some(agent))).unwrap();
        rec.detail = Some("recorded".into());
        serde_json::to_string(&rec).unwrap()
    };
    let lines = [
        log_line(1_000, Event::Queued, 7, "k7", None),
        recorded_line(7, "k7", "a7"),
        log_line(1_500, Event::Queued, 8, "k8", None),
        log_line(2_500, Event::Connected, 8, "k8", Some("a8")),
    ];
    let summary = LogSummary::from_lines(lines.iter().map(String::as_str));
    assert!(summary.calls[&7].recorded && !summary.calls[&8].recorded);
    // A hub that records calls records call 7 again (a file of its own), not call 8.
    let (mut hub, t0) = Hub::new(QueueConfig { record_calls: true, ..shared() });
    hub.q.restore(&summary, t0);
    let outs = drain(&mut hub.q);
    assert_eq!(
        recording_outputs(&outs),
        [Output::StartRecording { call_id: 7, kiosk: "k7".into(), agent: "a7".into() }]
    );
    let k7 = hub.kiosk("k7", t0 + secs(1));
    let outs = hub.resume(k7, 7, t0 + secs(1));
    assert_eq!(sent_to(&outs, k7), [HubMsg::Connected { call_id: 7, peer: "a7".into(), recorded: true }]);
    // It ends as a recorded call does: its recording stops.
    let a7 = hub.agent("a7", t0 + secs(2));
    hub.send(a7, ClientMsg::ResumeCall { call_id: 7 }, t0 + secs(2));
    let outs = hub.send(a7, ClientMsg::HangUp { call_id: 7 }, t0 + secs(3));
    assert_eq!(recording_outputs(&outs), [Output::StopRecording { call_id: 7 }]);
    // A hub no longer set to record calls holds the call unrecorded.
    let (mut hub, t0) = Hub::new(shared());
    hub.q.restore(&summary, t0);
    assert!(recording_outputs(&drain(&mut hub.q)).is_empty());
    let k7 = hub.kiosk("k7", t0 + secs(1));
    let outs = hub.resume(k7, 7, t0 + secs(1));
    assert_eq!(sent_to(&outs, k7), [HubMsg::Connected { call_id: 7, peer: "a7".into(), recorded: false }]);
}
