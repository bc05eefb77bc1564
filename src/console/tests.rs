use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

fn drain(c: &mut Console) -> (Vec<Output>, Option<Instant>) {
    let mut out = Vec::new();
    loop {
        match c.poll_output() {
            Output::Wait(d) => return (out, d),
            o => out.push(o),
        }
    }
}

fn to_hub(out: &[Output]) -> Vec<ClientMsg> {
    out.iter()
        .filter_map(|o| match o {
            Output::ToHub(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn offer(call_id: CallId) -> HubMsg {
    HubMsg::Offer { call_id, kiosk: "branch-1/kiosk-1".into(), waited_ms: 1500, timeout_ms: 10_000 }
}

fn connected(call_id: CallId) -> HubMsg {
    HubMsg::Connected { call_id, peer: "branch-1/kiosk-1".into(), recorded: false }
}

/// A console in call 7 with nothing left to drain.
fn in_call(t0: Instant) -> Console {
    let mut c = Console::new(None);
    c.handle_hub(offer(7), t0);
    c.handle_command(Command::Accept);
    c.handle_hub(connected(7), t0);
    drain(&mut c);
    c
}

#[test]
fn parse_reads_commands_and_refuses_the_rest() {
    assert_eq!(Command::parse("  idle "), Ok(Some(Command::Idle)));
    assert_eq!(Command::parse("A"), Ok(Some(Command::Accept)));
    assert_eq!(Command::parse("say hello there"), Ok(Some(Command::Say("hello there".into()))));
    assert_eq!(Command::parse(""), Ok(None));
    assert!(Command::parse("say  ").is_err());
    assert!(Command::parse("dance").unwrap_err().contains("unknown command `dance`"));
}

#[test]
fn a_person_starts_close_and_a_script_asks_for_idle() {
    let mut person = Console::new(None);
    assert_eq!(drain(&mut person), (vec![], None));
    assert_eq!(person.room(), RoomState::Close);
    let mut script =
        Console::new(Some(AutoAnswer { answer_delay: Duration::ZERO, call_duration: None, greeting: None }));
    let (out, _) = drain(&mut script);
    assert_eq!(to_hub(&out), [ClientMsg::SetPresence { presence: Presence::Idle }]);
    assert!(script.scripted() && !person.scripted());
}

#[test]
fn accept_answers_the_offer_and_connected_starts_media() {
    let t0 = Instant::now();
    let mut c = Console::new(None);
    c.handle_command(Command::Accept);
    let (out, _) = drain(&mut c);
    assert_eq!(events(&out), [Event::Notice("no call is offered".into())]);
    assert!(to_hub(&out).is_empty());

    c.handle_hub(offer(7), t0);
    c.handle_command(Command::Accept);
    let (out, _) = drain(&mut c);
    assert_eq!(to_hub(&out), [ClientMsg::Accept { call_id: 7 }]);
    assert!(events(&out).contains(&Event::AcceptSent { call_id: 7 }));

    c.handle_hub(connected(7), t0);
    let (out, _) = drain(&mut c);
    assert!(out.contains(&Output::StartMedia { call_id: 7 }));
    assert_eq!(c.call_id(), Some(7));

    c.handle_hub(HubMsg::CallEnded { call_id: 7, reason: EndReason::KioskHungUp }, t0);
    let (out, _) = drain(&mut c);
    assert!(out.contains(&Output::StopMedia));
    assert_eq!(c.call_id(), None);
}

#[test]
fn decline_and_withdrawal_forget_the_offer() {
    let t0 = Instant::now();
    let mut c = Console::new(None);
    c.handle_hub(offer(3), t0);
    c.handle_command(Command::Decline);
    let (out, _) = drain(&mut c);
    assert_eq!(to_hub(&out), [ClientMsg::Decline { call_id: 3 }]);
    c.handle_command(Command::Accept);
    assert!(to_hub(&drain(&mut c).0).is_empty(), "the declined offer is gone");

    c.handle_hub(offer(4), t0);
    c.handle_hub(HubMsg::OfferWithdrawn { call_id: 4, reason: WithdrawReason::Timeout }, t0);
    c.handle_command(Command::Accept);
    assert!(to_hub(&drain(&mut c).0).is_empty(), "the withdrawn offer is gone");
}

#[test]
fn a_script_answers_after_its_delay_and_hangs_up_after_the_call() {
    let t0 = Instant::now();
    let auto = AutoAnswer {
        answer_delay: Duration::from_millis(300),
        call_duration: Some(Duration::from_secs(6)),
        greeting: Some("Good morning".into()),
    };
    let mut c = Console::new(Some(auto));
    drain(&mut c);
    c.handle_hub(offer(9), t0);
    let (_, wait) = drain(&mut c);
    assert_eq!(wait, Some(t0 + Duration::from_millis(300)));
    c.handle_timeout(t0 + Duration::from_millis(299));
    assert!(to_hub(&drain(&mut c).0).is_empty(), "early wake-ups do nothing");
    c.handle_timeout(t0 + Duration::from_millis(300));
    assert_eq!(to_hub(&drain(&mut c).0), [ClientMsg::Accept { call_id: 9 }]);

    let t1 = t0 + Duration::from_secs(1);
    c.handle_hub(connected(9), t1);
    let (out, wait) = drain(&mut c);
    assert_eq!(to_hub(&out), [ClientMsg::Text { call_id: 9, id: 1, body: "Good morning".into() }]);
    assert_eq!(wait, Some(t1 + Duration::from_secs(6)));
    c.handle_timeout(t1 + Duration::from_secs(6));
    assert_eq!(to_hub(&drain(&mut c).0), [ClientMsg::HangUp { call_id: 9 }]);
    c.handle_timeout(t1 + Duration::from_secs(7));
    assert!(to_hub(&drain(&mut c).0).is_empty(), "once");
}

#[test]
fn a_script_does_not_accept_an_offer_withdrawn_meanwhile() {
    let t0 = Instant::now();
    let auto = AutoAnswer { answer_delay: Duration::from_millis(300), call_duration: None, greeting: None };
    let mut c = Console::new(Some(auto));
    drain(&mut c);
    c.handle_hub(offer(2), t0);
    c.handle_hub(HubMsg::OfferWithdrawn { call_id: 2, reason: WithdrawReason::CallerLeft }, t0);
    assert_eq!(drain(&mut c).1, None, "no timer left");
    c.handle_timeout(t0 + Duration::from_secs(1));
    assert!(to_hub(&drain(&mut c).0).is_empty());
}

#[test]
fn texts_are_acknowledged_and_shown_once() {
    let t0 = Instant::now();
    let mut c = in_call(t0);
    for _ in 0..3 {
        c.handle_hub(HubMsg::Text { call_id: 7, id: 1, body: "hello".into() }, t0);
    }
    let (out, _) = drain(&mut c);
    assert_eq!(to_hub(&out), vec![ClientMsg::TextAck { call_id: 7, id: 1 }; 3], "every copy acknowledged");
    let shown: Vec<Event> =
        events(&out).into_iter().filter(|e| matches!(e, Event::TextReceived { .. })).collect();
    assert_eq!(
        shown,
        [Event::TextReceived { call_id: 7, id: 1, body: "hello".into(), kiosk: "branch-1/kiosk-1".into() }]
    );
    // A text for another call is not ours.
    c.handle_hub(HubMsg::Text { call_id: 8, id: 1, body: "stray".into() }, t0);
    assert!(drain(&mut c).0.is_empty());
}

#[test]
fn texts_wait_while_the_kiosk_is_away_and_go_when_it_is_back() {
    let t0 = Instant::now();
    let mut c = in_call(t0);
    c.handle_command(Command::Say("one".into()));
    let (out, _) = drain(&mut c);
    assert_eq!(to_hub(&out), [ClientMsg::Text { call_id: 7, id: 1, body: "one".into() }]);
    c.handle_hub(HubMsg::PeerPresence { call_id: 7, present: false }, t0);
    c.handle_command(Command::Say("two".into()));
    let (out, _) = drain(&mut c);
    assert!(to_hub(&out).is_empty(), "not sent into the void");
    assert!(events(&out).contains(&Event::TextSent { call_id: 7, id: 2 }));

    c.handle_hub(HubMsg::PeerPresence { call_id: 7, present: true }, t0);
    let (out, _) = drain(&mut c);
    assert_eq!(
        to_hub(&out),
        [
            ClientMsg::Text { call_id: 7, id: 1, body: "one".into() },
            ClientMsg::Text { call_id: 7, id: 2, body: "two".into() }
        ],
        "everything unacknowledged goes again"
    );
    c.handle_hub(HubMsg::TextAck { call_id: 7, id: 1 }, t0);
    c.handle_hub(HubMsg::TextAck { call_id: 7, id: 1 }, t0);
    let delivered: Vec<Event> = events(&drain(&mut c).0);
    assert_eq!(delivered, [Event::TextDelivered { call_id: 7, id: 1 }], "delivered once");
    c.handle_hub(HubMsg::PeerPresence { call_id: 7, present: false }, t0);
    c.handle_hub(HubMsg::PeerPresence { call_id: 7, present: true }, t0);
    assert_eq!(to_hub(&drain(&mut c).0), [ClientMsg::Text { call_id: 7, id: 2, body: "two".into() }]);
}

#[test]
fn a_bad_text_is_refused_with_a_reason() {
    let t0 = Instant::now();
    let mut c = Console::new(None);
    c.handle_command(Command::Say("hello".into()));
    assert_eq!(events(&drain(&mut c).0), [Event::Notice("not in a call".into())]);
    let mut c = in_call(t0);
    c.handle_command(Command::Say("x".repeat(100_000)));
    let (out, _) = drain(&mut c);
    assert!(to_hub(&out).is_empty());
    assert!(matches!(&events(&out)[..], [Event::Notice(n)] if n.starts_with("not sent:")));
}

#[test]
fn closing_hangs_up_a_call_in_progress() {
    let t0 = Instant::now();
    let mut c = in_call(t0);
    c.close();
    let (out, _) = drain(&mut c);
    assert_eq!(to_hub(&out), [ClientMsg::HangUp { call_id: 7 }]);
    assert!(out.contains(&Output::StopMedia));
    let mut idle = Console::new(None);
    idle.close();
    assert!(to_hub(&drain(&mut idle).0).is_empty());
}

#[test]
fn status_says_where_the_agent_is() {
    let t0 = Instant::now();
    let mut c = Console::new(None);
    c.handle_hub(HubMsg::Room { state: RoomState::Idle }, t0);
    c.handle_hub(offer(5), t0);
    c.handle_command(Command::Status);
    let ev = events(&drain(&mut c).0);
    assert_eq!(ev.last(), Some(&Event::Notice("room IDLE — call 5 from branch-1/kiosk-1 offered".into())));
    assert_eq!(c.room(), RoomState::Idle);
}

#[test]
fn every_event_a_terminal_shows_has_a_line() {
    let e = Event::Connected { call_id: 1, kiosk: "k".into(), recorded: true };
    assert_eq!(e.line().as_deref(), Some("[call 1] connected with k — this call is being RECORDED"));
    assert_eq!(Event::TextSent { call_id: 1, id: 1 }.line(), None);
    assert_eq!(
        Event::Ended { call_id: 2, reason: EndReason::AgentHungUp }
            .line()
            .map(|l| l.starts_with("[call 2] ended")),
        Some(true)
    );
}

fn any_hub_msg() -> impl Strategy<Value = HubMsg> {
    let call = 1u64..4;
    prop_oneof![
        prop::sample::select(vec![RoomState::Close, RoomState::Idle, RoomState::Busy])
            .prop_map(|state| HubMsg::Room { state }),
        call.clone().prop_map(offer),
        call.clone().prop_map(|call_id| HubMsg::OfferWithdrawn { call_id, reason: WithdrawReason::Timeout }),
        call.clone().prop_map(connected),
        (call.clone(), any::<bool>())
            .prop_map(|(call_id, present)| HubMsg::PeerPresence { call_id, present }),
        call.clone().prop_map(|call_id| HubMsg::CallEnded { call_id, reason: EndReason::KioskHungUp }),
        (call.clone(), 1u64..5).prop_map(|(call_id, id)| HubMsg::Text {
            call_id,
            id,
            body: format!("t{id}")
        }),
        (call, 1u64..5).prop_map(|(call_id, id)| HubMsg::TextAck { call_id, id }),
    ]
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Idle),
        Just(Command::Close),
        Just(Command::Accept),
        Just(Command::Decline),
        Just(Command::HangUp),
        Just(Command::Status),
        "[a-z]{1,8}".prop_map(Command::Say),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Hub(HubMsg),
    Cmd(Command),
    Time(u64),
}

proptest! {
    /// Whatever the hub and the agent do, in any order: an accept is only ever for the call
    /// offered; media starts only for a connected call and runs for at most one call; each
    /// text of a call is shown once; texts go out only in the call in progress.
    #[test]
    fn any_sequence_keeps_the_contract(steps in prop::collection::vec(prop_oneof![
        any_hub_msg().prop_map(Step::Hub),
        any_command().prop_map(Step::Cmd),
        (0u64..2000).prop_map(Step::Time),
    ], 1..80), scripted in any::<bool>()) {
        let t0 = Instant::now();
        let auto = scripted.then(|| AutoAnswer {
            answer_delay: Duration::from_millis(100),
            call_duration: Some(Duration::from_millis(500)),
            greeting: Some("hi".into()),
        });
        let mut c = Console::new(auto);
        let mut now = t0;
        let mut offered: Option<CallId> = None;
        let mut media: Option<CallId> = None;
        let mut shown: HashSet<(CallId, u64)> = HashSet::new();
        for step in steps {
            match step {
                Step::Hub(msg) => {
                    match &msg {
                        HubMsg::Offer { call_id, .. } => offered = Some(*call_id),
                        HubMsg::OfferWithdrawn { call_id, .. } if offered == Some(*call_id) => offered = None,
                        HubMsg::Connected { .. } => offered = None,
                        _ => {}
                    }
                    c.handle_hub(msg, now);
                }
                Step::Cmd(cmd) => {
                    if cmd == Command::Decline { offered = None; }
                    c.handle_command(cmd);
                }
                Step::Time(ms) => {
                    now += Duration::from_millis(ms);
                    c.handle_timeout(now);
                }
            }
            // Outputs, checked against what the console was told.
            let before_call = c.call_id();
            for o in drain(&mut c).0 {
                match o {
                    Output::ToHub(ClientMsg::Accept { call_id }) => prop_assert_eq!(Some(call_id), offered),
                    Output::ToHub(ClientMsg::Text { call_id, .. }) => prop_assert_eq!(Some(call_id), before_call),
                    Output::StartMedia { call_id } => {
                        prop_assert_eq!(Some(call_id), c.call_id());
                        media = Some(call_id);
                    }
                    Output::StopMedia => media = None,
                    Output::Event(Event::TextReceived { call_id, id, .. }) => {
                        prop_assert!(shown.insert((call_id, id)), "text {} of call {} shown twice", id, call_id);
                    }
                    Output::Event(Event::Connected { call_id, .. }) => {
                        shown.retain(|(c, _)| *c != call_id);
                    }
                    _ => {}
                }
            }
            prop_assert!(media.is_none() || media == c.call_id(), "media {:?} for call {:?}", media, c.call_id());
        }
    }
}

#[test]
fn a_reconnect_asks_for_the_call_back_and_takes_calls_again_when_it_is_gone() {
    let t0 = Instant::now();
    let mut c = in_call(t0);
    c.handle_hub(HubMsg::Room { state: RoomState::Busy }, t0);
    drain(&mut c);
    c.reconnected();
    let (out, _) = drain(&mut c);
    assert!(out.contains(&Output::StopMedia), "{out:?}");
    assert_eq!(to_hub(&out), [ClientMsg::ResumeCall { call_id: 7 }]);
    assert_eq!((c.call_id(), c.room()), (Some(7), RoomState::Close));
    // The new hub does not know it: the call is over, and the advisor takes calls again.
    c.handle_hub(HubMsg::CallEnded { call_id: 7, reason: EndReason::Unknown }, t0);
    let (out, _) = drain(&mut c);
    assert_eq!(events(&out), [Event::Ended { call_id: 7, reason: EndReason::Unknown }]);
    assert_eq!(to_hub(&out), [ClientMsg::SetPresence { presence: Presence::Idle }]);
    assert_eq!(c.call_id(), None);
    // The old call's commands now find nothing.
    c.handle_command(Command::HangUp);
    assert!(to_hub(&drain(&mut c).0).is_empty());
}

#[test]
fn a_call_resumed_on_another_hub_goes_on_under_its_new_number_with_the_texts_not_delivered() {
    let t0 = Instant::now();
    let mut c = in_call(t0);
    c.handle_command(Command::Say("first".into()));
    drain(&mut c);
    c.reconnected();
    drain(&mut c);
    // Typed during the gap: held until the call is back.
    c.handle_command(Command::Say("second".into()));
    let (out, _) = drain(&mut c);
    assert!(to_hub(&out).is_empty(), "{out:?}");
    c.handle_hub(HubMsg::Connected { call_id: 40, peer: "branch-1/kiosk-1".into(), recorded: false }, t0);
    let (out, _) = drain(&mut c);
    assert!(out.contains(&Output::StartMedia { call_id: 40 }), "{out:?}");
    assert_eq!(
        to_hub(&out),
        [
            ClientMsg::Text { call_id: 40, id: 1, body: "first".into() },
            ClientMsg::Text { call_id: 40, id: 2, body: "second".into() }
        ]
    );
    assert_eq!(c.call_id(), Some(40));
    // The kiosk acknowledges under the new number.
    c.handle_hub(HubMsg::TextAck { call_id: 40, id: 1 }, t0);
    assert_eq!(events(&drain(&mut c).0), [Event::TextDelivered { call_id: 40, id: 1 }]);
}

#[test]
fn a_reconnect_leaves_a_closed_room_closed_and_forgets_an_offer() {
    let t0 = Instant::now();
    let mut c = Console::new(None);
    drain(&mut c);
    c.reconnected();
    assert!(drain(&mut c).0.is_empty(), "closed before, closed after, nothing sent");

    let mut c = Console::new(Some(AutoAnswer {
        answer_delay: Duration::from_millis(500),
        call_duration: None,
        greeting: None,
    }));
    c.handle_hub(HubMsg::Room { state: RoomState::Idle }, t0);
    c.handle_hub(offer(3), t0);
    drain(&mut c);
    c.reconnected();
    let (out, deadline) = drain(&mut c);
    assert_eq!(to_hub(&out), [ClientMsg::SetPresence { presence: Presence::Idle }]);
    assert_eq!(deadline, None, "the scripted accept of the lost offer is dropped");
    c.handle_timeout(t0 + Duration::from_secs(1));
    assert!(to_hub(&drain(&mut c).0).is_empty(), "nothing accepted on the new hub");
}
