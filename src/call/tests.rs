//! Deterministic tests of [`CallMachine`]: one `Instant::now()` as `t0`, every other time is
//! `t0 + d`; `drain` polls until `Output::Wait`, which it keeps as the last element.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::protocol::text::MAX_UNACKED;
use crate::protocol::{CallId, ClientMsg, EndReason, HubMsg};

const CALL: CallId = 7;
const AGENT: &str = "agent-1";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Polls until `Wait`; the `Wait` is the last element.
fn drain(m: &mut CallMachine) -> Vec<Output> {
    let mut outputs = Vec::new();
    loop {
        let output = m.poll_output();
        let done = matches!(output, Output::Wait(_));
        outputs.push(output);
        if done {
            return outputs;
        }
        assert!(outputs.len() < 10_000, "poll_output never reached Wait");
    }
}

/// Feeds an input that must be accepted and drains.
fn feed(m: &mut CallMachine, input: Input, at: Instant) -> Vec<Output> {
    m.handle_input(input, at).expect("input accepted");
    drain(m)
}

fn hub(m: &mut CallMachine, msg: HubMsg, at: Instant) -> Vec<Output> {
    feed(m, Input::FromHub(msg), at)
}

fn press(m: &mut CallMachine, button: Button, at: Instant) -> Vec<Output> {
    feed(m, Input::Button(button), at)
}

fn sent(outputs: &[Output]) -> Vec<ClientMsg> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::ToHub(msg) => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn states(outputs: &[Output]) -> Vec<KioskState> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::State(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn queued(call_id: CallId, position: u32, estimated_wait_s: Option<u32>) -> HubMsg {
    HubMsg::Queued { call_id, position, estimated_wait_s }
}

fn connected_msg(call_id: CallId) -> HubMsg {
    HubMsg::Connected { call_id, peer: AGENT.into(), recorded: false }
}

fn text_msg(call_id: CallId, id: u64, body: &str) -> ClientMsg {
    ClientMsg::Text { call_id, id, body: body.into() }
}

fn waiting_state(position: u32, estimated_wait_s: Option<u32>) -> KioskState {
    KioskState::Waiting { position, estimated_wait_s }
}

fn connected_state() -> KioskState {
    KioskState::Connected { agent: AGENT.into(), recorded: false }
}

/// A machine with the hub up, showing idle, all outputs drained.
fn idle(t0: Instant) -> CallMachine {
    let mut m = CallMachine::new(CallConfig::default());
    feed(&mut m, Input::HubUp, t0);
    assert_eq!(m.state(), KioskState::Idle);
    m
}

/// CALL pressed, no answer from the hub yet.
fn requesting(t0: Instant) -> CallMachine {
    let mut m = idle(t0);
    press(&mut m, Button::Call, t0);
    assert_eq!(m.state(), KioskState::Requesting);
    m
}

/// In the queue for `CALL`, position 3.
fn waiting(t0: Instant) -> CallMachine {
    let mut m = requesting(t0);
    hub(&mut m, queued(CALL, 3, Some(60)), t0);
    assert_eq!(m.state(), waiting_state(3, Some(60)));
    m
}

/// `CALL` offered to an agent.
fn ringing(t0: Instant) -> CallMachine {
    let mut m = waiting(t0);
    hub(&mut m, HubMsg::Ringing { call_id: CALL }, t0);
    assert_eq!(m.state(), KioskState::Ringing);
    m
}

/// In `CALL` with `AGENT`.
fn connected(t0: Instant) -> CallMachine {
    let mut m = ringing(t0);
    hub(&mut m, connected_msg(CALL), t0);
    assert_eq!(m.state(), connected_state());
    m
}

// ----- the call's path -----

#[test]
fn new_machine_shows_offline_until_the_hub_is_up() {
    let t0 = Instant::now();
    let mut m = CallMachine::new(CallConfig::default());
    assert_eq!(drain(&mut m), [Output::State(KioskState::Offline { resuming: false }), Output::Wait(None)]);
    assert_eq!(feed(&mut m, Input::HubUp, t0), [Output::State(KioskState::Idle), Output::Wait(None)]);
}

#[test]
fn call_goes_from_idle_through_queue_and_call_back_to_idle() {
    let t0 = Instant::now();
    let config = CallConfig::default();
    let ended_screen = config.ended_screen;
    let mut m = CallMachine::new(config);
    drain(&mut m);
    feed(&mut m, Input::HubUp, t0);

    assert_eq!(
        press(&mut m, Button::Call, t0 + secs(1)),
        [
            Output::ToHub(ClientMsg::RequestAgent { resume: None, consent: false }),
            Output::State(KioskState::Requesting),
            Output::Wait(None),
        ]
    );
    assert_eq!(
        hub(&mut m, queued(CALL, 2, Some(90)), t0 + secs(2)),
        [Output::State(waiting_state(2, Some(90))), Output::Wait(None)]
    );
    assert_eq!(m.call_id(), Some(CALL));
    assert_eq!(
        hub(&mut m, HubMsg::Ringing { call_id: CALL }, t0 + secs(30)),
        [Output::State(KioskState::Ringing), Output::Wait(None)]
    );
    assert_eq!(
        hub(&mut m, connected_msg(CALL), t0 + secs(35)),
        [Output::State(connected_state()), Output::Wait(None)]
    );
    let hung_up_at = t0 + secs(300);
    assert_eq!(
        hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, hung_up_at),
        [
            Output::State(KioskState::Ended { reason: EndReason::AgentHungUp }),
            Output::Wait(Some(hung_up_at + ended_screen)),
        ]
    );
    assert_eq!(m.call_id(), None);
    assert_eq!(
        feed(&mut m, Input::Tick, hung_up_at + ended_screen),
        [Output::State(KioskState::Idle), Output::Wait(None)]
    );
}

#[test]
fn ended_screen_stays_on_a_tick_before_its_deadline() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    let deadline = t0 + CallConfig::default().ended_screen;
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);

    assert_eq!(
        feed(&mut m, Input::Tick, deadline - Duration::from_millis(1)),
        [Output::Wait(Some(deadline))]
    );
    assert_eq!(m.state(), KioskState::Ended { reason: EndReason::AgentHungUp });
}

#[test]
fn ended_screen_returns_to_idle_on_a_late_tick() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);

    assert_eq!(
        feed(&mut m, Input::Tick, t0 + secs(3600)),
        [Output::State(KioskState::Idle), Output::Wait(None)]
    );
}

#[test]
fn queue_position_updates_are_shown() {
    let t0 = Instant::now();
    let mut m = waiting(t0);

    assert_eq!(
        hub(&mut m, queued(CALL, 2, None), t0 + secs(10)),
        [Output::State(waiting_state(2, None)), Output::Wait(None)]
    );
}

#[test]
fn unchanged_state_is_not_shown_again() {
    let t0 = Instant::now();
    let mut m = waiting(t0);

    assert_eq!(hub(&mut m, queued(CALL, 3, Some(60)), t0 + secs(1)), [Output::Wait(None)]);
    assert_eq!(feed(&mut m, Input::Tick, t0 + secs(2)), [Output::Wait(None)]);
    assert_eq!(press(&mut m, Button::Call, t0 + secs(3)), [Output::Wait(None)]);
}

#[test]
fn call_button_while_requesting_does_not_ask_twice() {
    let t0 = Instant::now();
    let mut m = requesting(t0);

    assert_eq!(press(&mut m, Button::Call, t0 + secs(1)), [Output::Wait(None)]);
}

#[test]
fn ringing_straight_after_the_request_shows_ringing() {
    let t0 = Instant::now();
    let mut m = requesting(t0);

    assert_eq!(
        hub(&mut m, HubMsg::Ringing { call_id: CALL }, t0),
        [Output::State(KioskState::Ringing), Output::Wait(None)]
    );
    assert_eq!(m.call_id(), Some(CALL));
}

#[test]
fn connected_straight_after_the_request_shows_the_agent() {
    let t0 = Instant::now();
    let mut m = requesting(t0);

    assert_eq!(hub(&mut m, connected_msg(CALL), t0), [Output::State(connected_state()), Output::Wait(None)]);
    assert_eq!(m.call_id(), Some(CALL));
}

#[test]
fn queued_again_while_ringing_goes_back_to_waiting() {
    let t0 = Instant::now();
    let mut m = ringing(t0);

    assert_eq!(
        hub(&mut m, queued(CALL, 1, Some(10)), t0 + secs(20)),
        [Output::State(waiting_state(1, Some(10))), Output::Wait(None)]
    );
}

#[test]
fn call_button_on_the_ended_screen_asks_for_an_agent_again() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);

    assert_eq!(
        press(&mut m, Button::Call, t0 + secs(1)),
        [
            Output::ToHub(ClientMsg::RequestAgent { resume: None, consent: false }),
            Output::State(KioskState::Requesting),
            Output::Wait(None),
        ]
    );
}

// ----- hanging up -----

#[test]
fn hangup_while_waiting_leaves_the_queue() {
    let t0 = Instant::now();
    let mut m = waiting(t0);
    let at = t0 + secs(20);

    assert_eq!(
        press(&mut m, Button::HangUp, at),
        [
            Output::ToHub(ClientMsg::HangUp { call_id: CALL }),
            Output::State(KioskState::Ended { reason: EndReason::KioskHungUp }),
            Output::Wait(Some(at + CallConfig::default().ended_screen)),
        ]
    );
    assert_eq!(m.call_id(), None);
}

#[test]
fn hangup_while_ringing_hangs_up_the_call() {
    let t0 = Instant::now();
    let mut m = ringing(t0);

    let out = press(&mut m, Button::HangUp, t0);
    assert_eq!(sent(&out), [ClientMsg::HangUp { call_id: CALL }]);
    assert_eq!(m.state(), KioskState::Ended { reason: EndReason::KioskHungUp });
}

#[test]
fn hangup_while_connected_hangs_up_the_call() {
    let t0 = Instant::now();
    let mut m = connected(t0);

    let out = press(&mut m, Button::HangUp, t0);
    assert_eq!(sent(&out), [ClientMsg::HangUp { call_id: CALL }]);
    assert_eq!(m.state(), KioskState::Ended { reason: EndReason::KioskHungUp });
}

#[test]
fn hangup_when_idle_does_nothing() {
    let t0 = Instant::now();
    let mut m = idle(t0);

    assert_eq!(press(&mut m, Button::HangUp, t0), [Output::Wait(None)]);
}

#[test]
fn hangup_while_requesting_waits_for_the_call_id() {
    let t0 = Instant::now();
    let mut m = requesting(t0);

    assert_eq!(press(&mut m, Button::HangUp, t0), [Output::Wait(None)]);
    assert_eq!(m.state(), KioskState::Requesting);
}

#[test]
fn hangup_while_requesting_hangs_up_the_call_once_queued() {
    let t0 = Instant::now();
    let mut m = requesting(t0);
    press(&mut m, Button::HangUp, t0);

    assert_eq!(
        hub(&mut m, queued(9, 1, None), t0 + secs(1)),
        [
            Output::ToHub(ClientMsg::HangUp { call_id: 9 }),
            Output::State(KioskState::Ended { reason: EndReason::KioskHungUp }),
            Output::Wait(Some(t0 + secs(1) + CallConfig::default().ended_screen)),
        ]
    );
}

#[test]
fn hangup_while_requesting_hangs_up_the_call_once_ringing() {
    let t0 = Instant::now();
    let mut m = requesting(t0);
    press(&mut m, Button::HangUp, t0);

    let out = hub(&mut m, HubMsg::Ringing { call_id: 9 }, t0);
    assert_eq!(sent(&out), [ClientMsg::HangUp { call_id: 9 }]);
    assert_eq!(m.state(), KioskState::Ended { reason: EndReason::KioskHungUp });
}

#[test]
fn hangup_while_requesting_hangs_up_the_call_once_connected() {
    let t0 = Instant::now();
    let mut m = requesting(t0);
    press(&mut m, Button::HangUp, t0);

    let out = hub(&mut m, connected_msg(9), t0);
    assert_eq!(sent(&out), [ClientMsg::HangUp { call_id: 9 }]);
    // Not left in "requesting": the hub's CallEnded for call 9 would not match any call.
    assert_eq!(m.state(), KioskState::Ended { reason: EndReason::KioskHungUp });
}

#[test]
fn hangup_while_requesting_offline_drops_the_request_on_hub_up() {
    let t0 = Instant::now();
    let mut m = requesting(t0);
    feed(&mut m, Input::HubDown, t0);
    press(&mut m, Button::HangUp, t0 + secs(1));

    assert_eq!(
        feed(&mut m, Input::HubUp, t0 + secs(5)),
        [Output::State(KioskState::Idle), Output::Wait(None)]
    );
}

#[test]
fn queued_for_a_call_hung_up_while_offline_is_hung_up() {
    let t0 = Instant::now();
    let mut m = waiting(t0);
    feed(&mut m, Input::HubDown, t0);
    press(&mut m, Button::HangUp, t0 + secs(1));
    feed(&mut m, Input::HubUp, t0 + secs(2));

    let out = hub(&mut m, queued(CALL, 1, None), t0 + secs(2));
    assert_eq!(sent(&out), [ClientMsg::HangUp { call_id: CALL }]);
    assert_eq!(states(&out), []);
}

// ----- offline -----

#[test]
fn call_button_while_offline_does_nothing() {
    let t0 = Instant::now();
    let mut m = CallMachine::new(CallConfig::default());
    drain(&mut m);

    assert_eq!(press(&mut m, Button::Call, t0), [Output::Wait(None)]);
    assert_eq!(m.state(), KioskState::Offline { resuming: false });
}

#[test]
fn hub_lost_while_idle_shows_offline_without_a_call() {
    let t0 = Instant::now();
    let mut m = idle(t0);

    assert_eq!(
        feed(&mut m, Input::HubDown, t0),
        [Output::State(KioskState::Offline { resuming: false }), Output::Wait(None)]
    );
}

#[test]
fn hub_lost_while_waiting_shows_offline_resuming() {
    let t0 = Instant::now();
    let mut m = waiting(t0);

    assert_eq!(
        feed(&mut m, Input::HubDown, t0 + secs(1)),
        [Output::State(KioskState::Offline { resuming: true }), Output::Wait(None)]
    );
    assert_eq!(m.call_id(), Some(CALL));
}

#[test]
fn hub_back_while_waiting_resumes_the_call() {
    let t0 = Instant::now();
    let mut m = waiting(t0);
    feed(&mut m, Input::HubDown, t0 + secs(1));

    assert_eq!(
        feed(&mut m, Input::HubUp, t0 + secs(4)),
        [
            Output::ToHub(ClientMsg::RequestAgent { resume: Some(CALL), consent: false }),
            Output::State(waiting_state(3, Some(60))),
            Output::Wait(None),
        ]
    );
}

#[test]
fn a_hub_moved_to_gives_the_waiting_caller_its_place_under_its_own_number() {
    let t0 = Instant::now();
    let mut m = ringing(t0);
    feed(&mut m, Input::HubDown, t0 + secs(1));
    feed(&mut m, Input::HubUp, t0 + secs(4));

    // The other hub kept the place: waiting at position 2 in call 77, nothing hung up.
    assert_eq!(
        hub(&mut m, queued(77, 2, Some(30)), t0 + secs(4)),
        [Output::State(waiting_state(2, Some(30))), Output::Wait(None)]
    );
    assert_eq!(m.call_id(), Some(77));
    hub(&mut m, connected_msg(77), t0 + secs(9));
    assert_eq!(m.state(), connected_state());
    // Only once: a later Queued for yet another call is not ours.
    assert_eq!(
        hub(&mut m, queued(78, 1, None), t0 + secs(10)),
        [Output::ToHub(ClientMsg::HangUp { call_id: 78 }), Output::Wait(None)]
    );
}

#[test]
fn a_hub_moved_to_may_offer_and_connect_the_call_before_it_tells_the_place() {
    let t0 = Instant::now();
    for first in [HubMsg::Ringing { call_id: 77 }, connected_msg(77)] {
        let mut m = waiting(t0);
        feed(&mut m, Input::HubDown, t0 + secs(1));
        feed(&mut m, Input::HubUp, t0 + secs(2));
        let outs = hub(&mut m, first.clone(), t0 + secs(2));
        assert!(
            !outs.iter().any(|o| matches!(o, Output::ToHub(ClientMsg::HangUp { .. }))),
            "{first:?}: {outs:?}"
        );
        assert_eq!(m.call_id(), Some(77));
        hub(&mut m, connected_msg(77), t0 + secs(3));
        assert_eq!(m.state(), connected_state());
        // Only once: a later offer of yet another call is not ours.
        assert_eq!(
            hub(&mut m, connected_msg(78), t0 + secs(4)),
            [Output::ToHub(ClientMsg::HangUp { call_id: 78 }), Output::Wait(None)]
        );
    }
}

#[test]
fn without_a_reconnect_a_queued_for_another_call_is_still_hung_up() {
    let t0 = Instant::now();
    let mut m = waiting(t0);
    assert_eq!(
        hub(&mut m, queued(CALL + 1, 1, None), t0),
        [Output::ToHub(ClientMsg::HangUp { call_id: CALL + 1 }), Output::Wait(None)]
    );
    assert_eq!(m.call_id(), Some(CALL));
}

#[test]
fn hub_back_while_connected_resumes_the_call() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    feed(&mut m, Input::HubDown, t0 + secs(1));

    let out = feed(&mut m, Input::HubUp, t0 + secs(4));
    assert_eq!(sent(&out), [ClientMsg::RequestAgent { resume: Some(CALL), consent: false }]);
    assert_eq!(m.state(), connected_state());
}

#[test]
fn hub_back_while_requesting_asks_again() {
    let t0 = Instant::now();
    let mut m = requesting(t0);
    feed(&mut m, Input::HubDown, t0 + secs(1));
    assert_eq!(m.state(), KioskState::Offline { resuming: true });

    assert_eq!(
        feed(&mut m, Input::HubUp, t0 + secs(4)),
        [
            Output::ToHub(ClientMsg::RequestAgent { resume: None, consent: false }),
            Output::State(KioskState::Requesting),
            Output::Wait(None),
        ]
    );
}

#[test]
fn hub_back_when_idle_sends_nothing() {
    let t0 = Instant::now();
    let mut m = idle(t0);
    feed(&mut m, Input::HubDown, t0);

    assert_eq!(
        feed(&mut m, Input::HubUp, t0 + secs(1)),
        [Output::State(KioskState::Idle), Output::Wait(None)]
    );
}

#[test]
fn hangup_while_offline_sends_nothing_and_ends_the_call() {
    let t0 = Instant::now();
    let mut m = waiting(t0);
    feed(&mut m, Input::HubDown, t0);

    assert_eq!(
        press(&mut m, Button::HangUp, t0 + secs(1)),
        [
            Output::State(KioskState::Offline { resuming: false }),
            Output::Wait(Some(t0 + secs(1) + CallConfig::default().ended_screen)),
        ]
    );
    assert_eq!(m.call_id(), None);
}

#[test]
fn text_while_offline_is_kept_but_not_sent() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    feed(&mut m, Input::HubDown, t0);

    assert_eq!(feed(&mut m, Input::SendText("still there?".into()), t0), [Output::Wait(None)]);
    assert_eq!(m.unacked_texts(), 1);
}

// ----- the hub ends or refuses the call -----

#[test]
fn unknown_call_while_waiting_asks_for_a_new_place() {
    let t0 = Instant::now();
    let mut m = waiting(t0);

    assert_eq!(
        hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::Unknown }, t0),
        [
            Output::ToHub(ClientMsg::RequestAgent { resume: None, consent: false }),
            Output::State(KioskState::Requesting),
            Output::Wait(None),
        ]
    );
    assert_eq!(m.call_id(), None);
}

#[test]
fn unknown_call_while_ringing_asks_for_a_new_place() {
    let t0 = Instant::now();
    let mut m = ringing(t0);

    let out = hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::Unknown }, t0);
    assert_eq!(sent(&out), [ClientMsg::RequestAgent { resume: None, consent: false }]);
    assert_eq!(m.state(), KioskState::Requesting);
}

#[test]
fn unknown_call_while_connected_ends_the_call() {
    let t0 = Instant::now();
    let mut m = connected(t0);

    let out = hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::Unknown }, t0);
    assert_eq!(sent(&out), []);
    assert_eq!(m.state(), KioskState::Ended { reason: EndReason::Unknown });
}

#[test]
fn call_ended_while_waiting_ends_with_its_reason() {
    let t0 = Instant::now();
    let mut m = waiting(t0);

    let out = hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::HubShutdown }, t0);
    assert_eq!(states(&out), [KioskState::Ended { reason: EndReason::HubShutdown }]);
}

#[test]
fn call_ended_for_another_call_is_ignored() {
    let t0 = Instant::now();
    let mut m = connected(t0);

    assert_eq!(
        hub(&mut m, HubMsg::CallEnded { call_id: CALL + 1, reason: EndReason::AgentHungUp }, t0),
        [Output::Wait(None)]
    );
    assert_eq!(m.state(), connected_state());
}

#[test]
fn busy_shows_the_busy_screen() {
    let t0 = Instant::now();
    let mut m = requesting(t0);

    assert_eq!(
        hub(&mut m, HubMsg::Busy { retry_after_s: 60 }, t0 + secs(1)),
        [
            Output::State(KioskState::Busy),
            Output::Wait(Some(t0 + secs(1) + CallConfig::default().busy_screen))
        ]
    );
}

#[test]
fn busy_screen_returns_to_idle_at_its_deadline() {
    let t0 = Instant::now();
    let mut m = requesting(t0);
    hub(&mut m, HubMsg::Busy { retry_after_s: 60 }, t0);
    let deadline = t0 + CallConfig::default().busy_screen;

    assert_eq!(
        feed(&mut m, Input::Tick, deadline - Duration::from_millis(1)),
        [Output::Wait(Some(deadline))]
    );
    assert_eq!(feed(&mut m, Input::Tick, deadline), [Output::State(KioskState::Idle), Output::Wait(None)]);
}

#[test]
fn busy_outside_a_request_is_ignored() {
    let t0 = Instant::now();
    let mut m = waiting(t0);

    assert_eq!(hub(&mut m, HubMsg::Busy { retry_after_s: 60 }, t0), [Output::Wait(None)]);
    assert_eq!(m.state(), waiting_state(3, Some(60)));
}

#[test]
fn connected_for_an_unknown_call_is_hung_up() {
    let t0 = Instant::now();
    let mut m = idle(t0);

    assert_eq!(
        hub(&mut m, connected_msg(9), t0),
        [Output::ToHub(ClientMsg::HangUp { call_id: 9 }), Output::Wait(None)]
    );
    assert_eq!(m.state(), KioskState::Idle);
}

#[test]
fn connected_for_another_call_during_a_call_is_hung_up() {
    let t0 = Instant::now();
    let mut m = connected(t0);

    assert_eq!(
        hub(&mut m, connected_msg(CALL + 1), t0),
        [Output::ToHub(ClientMsg::HangUp { call_id: CALL + 1 }), Output::Wait(None)]
    );
    assert_eq!(m.call_id(), Some(CALL));
}

#[test]
fn queued_for_an_unknown_call_is_hung_up() {
    let t0 = Instant::now();
    let mut m = idle(t0);

    assert_eq!(
        hub(&mut m, queued(9, 1, None), t0),
        [Output::ToHub(ClientMsg::HangUp { call_id: 9 }), Output::Wait(None)]
    );
}

// ----- texts -----

#[test]
fn text_in_a_call_is_sent_with_increasing_ids() {
    let t0 = Instant::now();
    let mut m = connected(t0);

    assert_eq!(
        feed(&mut m, Input::SendText("hello".into()), t0),
        [Output::ToHub(text_msg(CALL, 1, "hello")), Output::Wait(None)]
    );
    assert_eq!(sent(&feed(&mut m, Input::SendText("bye".into()), t0)), [text_msg(CALL, 2, "bye")]);
    assert_eq!(m.unacked_texts(), 2);
}

#[test]
fn text_outside_a_call_is_refused() {
    let t0 = Instant::now();
    for mut m in [idle(t0), requesting(t0), waiting(t0), ringing(t0)] {
        let state = m.state();
        assert_eq!(m.handle_input(Input::SendText("hi".into()), t0), Err(CallError::NotInCall), "{state:?}");
        assert_eq!(drain(&mut m), [Output::Wait(None)], "{state:?}");
    }
}

#[test]
fn text_after_the_call_ended_is_refused() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);

    assert_eq!(m.handle_input(Input::SendText("hi".into()), t0), Err(CallError::NotInCall));
}

#[test]
fn invalid_text_is_refused() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    let too_long = "x".repeat(crate::protocol::MAX_TEXT_BYTES + 1);

    for body in ["", "bell\u{7}", too_long.as_str()] {
        let result = m.handle_input(Input::SendText(body.into()), t0);
        assert!(matches!(result, Err(CallError::InvalidText(_))), "{body:?}: {result:?}");
        assert_eq!(drain(&mut m), [Output::Wait(None)]);
    }
    assert_eq!(m.unacked_texts(), 0);
}

#[test]
fn text_with_newline_and_tab_is_accepted() {
    let t0 = Instant::now();
    let mut m = connected(t0);

    assert_eq!(sent(&feed(&mut m, Input::SendText("a\n\tb".into()), t0)), [text_msg(CALL, 1, "a\n\tb")]);
}

#[test]
fn texts_past_the_backlog_are_refused() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    for _ in 0..MAX_UNACKED {
        feed(&mut m, Input::SendText("unread".into()), t0);
    }

    assert_eq!(m.handle_input(Input::SendText("one more".into()), t0), Err(CallError::TextBacklog));
    assert_eq!(drain(&mut m), [Output::Wait(None)]);
}

#[test]
fn received_text_is_shown_once_and_acknowledged_every_time() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    let text = HubMsg::Text { call_id: CALL, id: 1, body: "how can I help?".into() };

    assert_eq!(
        hub(&mut m, text.clone(), t0),
        [
            Output::ToHub(ClientMsg::TextAck { call_id: CALL, id: 1 }),
            Output::TextReceived { call_id: CALL, id: 1, body: "how can I help?".into() },
            Output::Wait(None),
        ]
    );
    assert_eq!(
        hub(&mut m, text, t0 + secs(1)),
        [Output::ToHub(ClientMsg::TextAck { call_id: CALL, id: 1 }), Output::Wait(None)]
    );
}

#[test]
fn received_text_for_another_call_is_ignored() {
    let t0 = Instant::now();
    let mut m = connected(t0);

    assert_eq!(
        hub(&mut m, HubMsg::Text { call_id: CALL + 1, id: 1, body: "hi".into() }, t0),
        [Output::Wait(None)]
    );
}

#[test]
fn text_ack_reports_delivery_once() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    feed(&mut m, Input::SendText("hello".into()), t0);
    let ack = HubMsg::TextAck { call_id: CALL, id: 1 };

    assert_eq!(
        hub(&mut m, ack.clone(), t0),
        [Output::TextDelivered { call_id: CALL, id: 1 }, Output::Wait(None)]
    );
    assert_eq!(hub(&mut m, ack, t0), [Output::Wait(None)]);
    assert_eq!(m.unacked_texts(), 0);
}

#[test]
fn text_ack_for_another_call_is_ignored() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    feed(&mut m, Input::SendText("hello".into()), t0);

    assert_eq!(hub(&mut m, HubMsg::TextAck { call_id: CALL + 1, id: 1 }, t0), [Output::Wait(None)]);
    assert_eq!(m.unacked_texts(), 1);
}

#[test]
fn unacknowledged_texts_are_sent_again_after_a_reconnect() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    for body in ["one", "two", "three"] {
        feed(&mut m, Input::SendText(body.into()), t0);
    }
    hub(&mut m, HubMsg::TextAck { call_id: CALL, id: 2 }, t0);
    feed(&mut m, Input::HubDown, t0 + secs(1));
    feed(&mut m, Input::HubUp, t0 + secs(3));

    assert_eq!(
        hub(&mut m, connected_msg(CALL), t0 + secs(3)),
        [
            Output::ToHub(text_msg(CALL, 1, "one")),
            Output::ToHub(text_msg(CALL, 3, "three")),
            Output::Wait(None)
        ]
    );
}

#[test]
fn text_written_while_offline_is_sent_after_the_reconnect() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    feed(&mut m, Input::HubDown, t0);
    feed(&mut m, Input::SendText("are you there?".into()), t0 + secs(1));
    feed(&mut m, Input::HubUp, t0 + secs(2));

    assert_eq!(sent(&hub(&mut m, connected_msg(CALL), t0 + secs(2))), [text_msg(CALL, 1, "are you there?")]);
}

#[test]
fn next_call_numbers_texts_from_one() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    feed(&mut m, Input::SendText("first call".into()), t0);
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);
    press(&mut m, Button::Call, t0 + secs(1));
    hub(&mut m, connected_msg(CALL + 1), t0 + secs(1));

    assert_eq!(m.unacked_texts(), 0);
    assert_eq!(
        sent(&feed(&mut m, Input::SendText("second call".into()), t0 + secs(2))),
        [text_msg(CALL + 1, 1, "second call")]
    );
}

#[test]
fn texts_of_the_next_call_are_shown_even_with_reused_ids() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    hub(&mut m, HubMsg::Text { call_id: CALL, id: 1, body: "first".into() }, t0);
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);
    press(&mut m, Button::Call, t0 + secs(1));
    hub(&mut m, connected_msg(CALL + 1), t0 + secs(1));

    let out = hub(&mut m, HubMsg::Text { call_id: CALL + 1, id: 1, body: "second".into() }, t0 + secs(2));
    assert!(
        out.contains(&Output::TextReceived { call_id: CALL + 1, id: 1, body: "second".into() }),
        "{out:?}"
    );
}

// ----- deadlines -----

#[test]
fn any_input_after_the_ended_screen_deadline_returns_to_idle() {
    let t0 = Instant::now();
    let mut m = connected(t0);
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);
    let late = t0 + secs(3600);

    // The refusal does not keep the machine on a screen whose deadline passed.
    assert_eq!(m.handle_input(Input::SendText("hi".into()), late), Err(CallError::NotInCall));
    assert_eq!(drain(&mut m), [Output::State(KioskState::Idle), Output::Wait(None)]);
}

// ----- in_call -----

#[test]
fn in_call_holds_from_request_to_connected_and_while_resuming() {
    let cases = [
        (KioskState::Offline { resuming: false }, false),
        (KioskState::Offline { resuming: true }, true),
        (KioskState::Idle, false),
        (KioskState::Requesting, true),
        (waiting_state(1, None), true),
        (KioskState::Ringing, true),
        (connected_state(), true),
        (KioskState::Ended { reason: EndReason::AgentHungUp }, false),
        (KioskState::Busy, false),
    ];
    for (state, in_call) in cases {
        assert_eq!(state.in_call(), in_call, "{state:?}");
    }
}

#[test]
fn machine_in_call_follows_the_call() {
    let t0 = Instant::now();
    assert!(!idle(t0).state().in_call());
    assert!(requesting(t0).state().in_call());
    assert!(waiting(t0).state().in_call());
    assert!(ringing(t0).state().in_call());
    assert!(connected(t0).state().in_call());

    let mut m = connected(t0);
    feed(&mut m, Input::HubDown, t0);
    assert!(m.state().in_call(), "a held call keeps OTA updates away while offline");
    feed(&mut m, Input::HubUp, t0);
    hub(&mut m, HubMsg::CallEnded { call_id: CALL, reason: EndReason::AgentHungUp }, t0);
    assert!(!m.state().in_call());
}

// ----- properties -----

/// One input of the driver, after `advance_ms` more milliseconds.
#[derive(Debug, Clone)]
struct Step {
    advance_ms: u64,
    input: Input,
}

fn end_reason() -> impl Strategy<Value = EndReason> {
    prop_oneof![
        Just(EndReason::KioskHungUp),
        Just(EndReason::AgentHungUp),
        Just(EndReason::AgentDisconnected),
        Just(EndReason::KioskDisconnected),
        Just(EndReason::HubShutdown),
        Just(EndReason::Unknown),
    ]
}

fn hub_msg() -> impl Strategy<Value = HubMsg> {
    let call_id = 1..4u64;
    let text_id = 1..4u64;
    prop_oneof![
        (call_id.clone(), 1..5u32, proptest::option::of(0..120u32)).prop_map(|(c, p, e)| queued(c, p, e)),
        (0..60u32).prop_map(|retry_after_s| HubMsg::Busy { retry_after_s }),
        call_id.clone().prop_map(|call_id| HubMsg::Ringing { call_id }),
        call_id.clone().prop_map(connected_msg),
        (call_id.clone(), end_reason()).prop_map(|(call_id, reason)| HubMsg::CallEnded { call_id, reason }),
        (call_id.clone(), text_id.clone()).prop_map(|(call_id, id)| HubMsg::Text {
            call_id,
            id,
            body: format!("text {id}")
        }),
        (call_id, text_id).prop_map(|(call_id, id)| HubMsg::TextAck { call_id, id }),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::HubUp),
        Just(Input::HubDown),
        Just(Input::Button(Button::Call)),
        Just(Input::Button(Button::HangUp)),
        Just(Input::Tick),
        prop_oneof![Just("hi".to_string()), Just(String::new())].prop_map(Input::SendText),
        hub_msg().prop_map(Input::FromHub),
        hub_msg().prop_map(Input::FromHub),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (prop_oneof![Just(0u64), 0..15_000u64], input())
        .prop_map(|(advance_ms, input)| Step { advance_ms, input })
}

proptest! {
    /// Whatever the hub and the customer do, the driver's contract holds after every input.
    #[test]
    fn outputs_keep_the_driver_contract(
        ended_screen_ms in 0..10_000u64,
        busy_screen_ms in 0..10_000u64,
        steps in proptest::collection::vec(step(), 0..80),
    ) {
        let t0 = Instant::now();
        let config = CallConfig {
            ended_screen: Duration::from_millis(ended_screen_ms),
            busy_screen: Duration::from_millis(busy_screen_ms),
            ..CallConfig::default()
        };
        let mut m = CallMachine::new(config);
        let mut shown = None;
        for output in drain(&mut m) {
            if let Output::State(s) = output {
                shown = Some(s);
            }
        }
        let (mut now, mut hub_up) = (t0, false);
        for Step { advance_ms, input } in steps {
            // The driver never reports a connection twice, nor messages without one.
            match input {
                Input::HubUp if hub_up => continue,
                Input::HubDown | Input::FromHub(_) if !hub_up => continue,
                Input::HubUp => hub_up = true,
                Input::HubDown => hub_up = false,
                _ => {}
            }
            now += Duration::from_millis(advance_ms);
            let _ = m.handle_input(input, now);
            let outputs = drain(&mut m);

            let (wait, rest) = outputs.split_last().expect("drain ends with Wait");
            prop_assert_eq!(wait, &Output::Wait(m.poll_timeout()));
            if let Some(deadline) = m.poll_timeout() {
                prop_assert!(deadline > now, "deadline {:?} not after the last input {:?}", deadline - t0, now - t0);
            }
            let mut states_shown = 0;
            for output in rest {
                match output {
                    Output::ToHub(msg) => prop_assert!(hub_up, "{:?} emitted while the hub is down", msg),
                    Output::State(s) => {
                        prop_assert_ne!(Some(s), shown.as_ref(), "unchanged state shown again");
                        shown = Some(s.clone());
                        states_shown += 1;
                    }
                    Output::Wait(_) => prop_assert!(false, "Wait before the end of the drain"),
                    Output::TextReceived { .. } | Output::TextDelivered { .. } => {}
                }
                if let Output::ToHub(ClientMsg::Text { call_id, .. }) = output {
                    prop_assert_eq!(Some(*call_id), m.call_id(), "text sent outside its call");
                }
            }
            prop_assert!(states_shown <= 1);
            prop_assert_eq!(shown.as_ref(), Some(&m.state()));
            if m.call_id().is_some() {
                prop_assert!(m.state().in_call());
            }
        }
    }
}
