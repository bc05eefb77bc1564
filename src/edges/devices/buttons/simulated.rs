//! Simulated buttons: keys on stdin, lines on a local Unix socket, or a handle in the same
//! process (the demo and tests). A press is a down edge and an up edge 100 ms later, optionally
//! with contact bounce so that the debouncer is exercised.

use std::io::BufRead;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use super::{Button, Buttons, Origin, RawEdge};
use crate::edges::devices::HwError;

/// Parses one line of the simulated panel: `c`/`call` or `h`/`hangup`.
pub fn parse_key(line: &str) -> Option<Button> {
    match line.trim().to_ascii_lowercase().as_str() {
        "c" | "call" => Some(Button::Call),
        "h" | "hangup" | "hang-up" => Some(Button::HangUp),
        _ => None,
    }
}

/// A panel that presses simulated buttons. Cloneable; the backend ends when all are dropped.
#[derive(Clone)]
pub struct Panel {
    tx: std_mpsc::SyncSender<RawEdge>,
    epoch: Instant,
    bounce: bool,
}

impl Panel {
    /// Presses and releases `button` now.
    pub fn press(&self, button: Button) -> bool {
        let now = self.epoch.elapsed();
        let mut edges = vec![];
        if self.bounce {
            // 30 ms of contact bounce, edges 3 ms apart, on the way down and up.
            for i in 0..10u64 {
                edges.push(RawEdge { button, pressed: i % 2 == 0, at: now + Duration::from_millis(i * 3) });
            }
            edges.push(RawEdge { button, pressed: true, at: now + Duration::from_millis(30) });
            for i in 0..10u64 {
                edges.push(RawEdge {
                    button,
                    pressed: i % 2 == 1,
                    at: now + Duration::from_millis(130 + i * 3),
                });
            }
        } else {
            edges.push(RawEdge { button, pressed: true, at: now });
        }
        edges.push(RawEdge { button, pressed: false, at: now + Duration::from_millis(160) });
        edges.into_iter().all(|e| self.tx.send(e).is_ok())
    }
}

/// The backend side of a [`Panel`].
pub struct SimulatedButtons {
    rx: std_mpsc::Receiver<RawEdge>,
}

impl SimulatedButtons {
    /// A backend and the panel that drives it. `bounce` adds 30 ms of contact bounce.
    pub fn new(bounce: bool) -> (Self, Panel) {
        let (tx, rx) = std_mpsc::sync_channel(64);
        (Self { rx }, Panel { tx, epoch: Instant::now(), bounce })
    }

    /// A backend fed by lines from stdin (`c` = CALL, `h` = HANGUP).
    pub fn stdin() -> std::io::Result<Self> {
        let (me, panel) = Self::new(false);
        std::thread::Builder::new().name("buttons-stdin".into()).spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if let Some(b) = parse_key(&line)
                    && !panel.press(b)
                {
                    break;
                }
            }
        })?;
        Ok(me)
    }

    /// A backend fed by lines written to a Unix socket at `path` (created with mode 0600).
    pub fn unix_socket(path: &std::path::Path) -> Result<Self, HwError> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(|e| HwError::Open {
            what: "simulated button socket",
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            HwError::Open { what: "simulated button socket", path: path.to_path_buf(), source: Box::new(e) }
        })?;
        let (me, panel) = Self::new(false);
        std::thread::Builder::new()
            .name("buttons-socket".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    for line in std::io::BufReader::new(stream).lines() {
                        let Ok(line) = line else { break };
                        if let Some(b) = parse_key(&line)
                            && !panel.press(b)
                        {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| HwError::Io { what: "starting the button socket thread", source: Box::new(e) })?;
        Ok(me)
    }
}

impl Buttons for SimulatedButtons {
    fn next_edge(&mut self) -> Result<RawEdge, HwError> {
        self.rx.recv().map_err(|_| HwError::Closed("simulated buttons"))
    }

    fn origin(&self) -> Origin {
        Origin::Simulated
    }
}
