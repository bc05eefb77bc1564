//! `kioskd demo --console`: the hub with its browser console and synthetic kiosks that keep
//! calling, so that a person takes real calls in their own browser. Runs until Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::DemoOptions;
use super::cast::{Cast, Ev};
use crate::call::{Button, KioskState};
use crate::roles::hub::console::{Accounts, ConsoleOptions};
use crate::roles::kiosk::KioskEvent;

/// The advisor account the demo creates.
pub const ADVISOR: &str = "advisor";
/// A customer presses CALL again this long after their call ended.
const CALL_AGAIN: Duration = Duration::from_secs(4);

/// Where the console listens: `port` on 127.0.0.1 (0: any free port).
pub async fn run(mut opts: DemoOptions, port: u16) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kioskd-demo-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let accounts = dir.join("accounts.toml");
    let password = one_time_password()?;
    Accounts::set(&accounts, ADVISOR, &password, false)?;
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    opts.agents = 0;
    opts.console = Some(ConsoleOptions {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        media: local,
        media_public: None,
        accounts,
        session_ttl: Duration::from_secs(8 * 3600),
        media_grace: crate::roles::hub::console::DEFAULT_MEDIA_GRACE,
    });
    let mut cast = Cast::start(&opts).await?;
    let https = cast.hub.console_addrs.map(|c| c.https).ok_or_else(|| anyhow::anyhow!("no console"))?;
    println!("kioskd demo: the advisors' console is at  https://127.0.0.1:{}/", https.port());
    println!("  sign in as  {ADVISOR}  with the one-time password  {password}");
    println!(
        "  (the demo's certificate authority is made up for this run: let the browser proceed past its warning)"
    );
    println!(
        "  {} synthetic kiosk(s) call as soon as you go available; Ctrl-C ends the demo.",
        cast.kiosks.len()
    );
    for k in &cast.kiosks {
        k.panel.press(Button::Call);
    }
    let mut calls = 0u32;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            ev = cast.events.recv() => {
                let Some(Ev::Kiosk(i, KioskEvent::State { state, .. })) = ev else {
                    if ev.is_none() { break }
                    continue;
                };
                let name = cast.kiosks[i].name.clone();
                match state {
                    KioskState::Waiting { position, .. } => println!("  {name}: waiting, place {position}"),
                    KioskState::Ringing => println!("  {name}: ringing your console"),
                    KioskState::Connected { agent, .. } => {
                        calls += 1;
                        println!("  {name}: in a call with {agent} (call {calls})");
                    }
                    KioskState::Ended { reason } => println!("  {name}: call ended ({})", reason.as_str()),
                    KioskState::Idle => {
                        let panel = cast.kiosks[i].panel.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(CALL_AGAIN).await;
                            panel.press(Button::Call);
                        });
                    }
                    _ => {}
                }
            }
        }
    }
    let mut errors = Vec::new();
    let stopped = cast.stop(&mut errors).await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "kioskd demo: {calls} call(s) taken in the console; {} connected in all; event log: {}",
        stopped.hub.stats.connected, stopped.event_log
    );
    for e in errors {
        println!("  problem: {e}");
    }
    Ok(())
}

/// Twelve random letters and digits (no look-alikes).
fn one_time_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut raw = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness for the one-time password"))?;
    Ok(raw.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}
