//! The CALL and HANGUP buttons.
//!
//! A backend delivers raw edges with the kernel's timestamp; [`Debouncer`] turns them into
//! presses on the backend's own thread; the kiosk driver receives presses on a small bounded
//! channel (presses are never dropped: the channel applies back-pressure to the thread).

pub mod gpio_cdev;
pub mod rpi;
pub mod simulated;

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, error, info};

pub use crate::call::Button;
use crate::devices::HwError;

/// An edge on a button's line, as the backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEdge {
    pub button: Button,
    /// True when the button went down (after active-low is applied).
    pub pressed: bool,
    /// Monotonic time of the edge (kernel timestamp where the backend has one).
    pub at: Duration,
}

/// Where a press came from. Remote input (the hub, an agent) cannot produce a press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A physical line: GPIO character device or Raspberry Pi GPIO.
    Gpio,
    /// The simulated panel: stdin, a local Unix socket, or the demo.
    Simulated,
}

/// A debounced press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonEvent {
    pub button: Button,
    pub at: Duration,
    pub origin: Origin,
}

/// Physical buttons. Real: GPIO line events. Synthetic: a script, stdin or the demo panel.
pub trait Buttons: Send + 'static {
    /// Blocks for the next raw edge; called only on this backend's own thread.
    fn next_edge(&mut self) -> Result<RawEdge, HwError>;
    fn origin(&self) -> Origin;
}

/// Turns bouncing edges into single presses. Sans-IO and timer-free.
///
/// A press is taken on a down edge when the line was up and quiet for `window` before it.
/// Contacts bounce for a few milliseconds on press and on release: every edge of a bounce
/// follows the previous one closely, so none of them is quiet-preceded and none counts. A
/// person cannot release and press again within `window` (default 50 ms).
#[derive(Debug, Clone)]
pub struct Debouncer {
    window: Duration,
    last_edge: Option<Duration>,
    down: bool,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Self { window, last_edge: None, down: false }
    }

    /// Feeds one raw edge of this button; true when it is a press.
    pub fn handle_edge(&mut self, pressed: bool, at: Duration) -> bool {
        let quiet = self.last_edge.is_none_or(|last| at.saturating_sub(last) >= self.window);
        let press = pressed && quiet && !self.down;
        self.last_edge = Some(at);
        // While bouncing the level is unreliable; it is trusted again once quiet.
        self.down = pressed && (quiet || self.down);
        if !pressed && quiet {
            self.down = false;
        }
        press
    }
}

/// Starts the button thread: reads `source`, debounces, and sends presses into the returned
/// channel. The thread ends when the receiver is dropped or the source fails; its last error is
/// logged and the channel closes, which the driver treats as the buttons being gone.
pub fn spawn(mut source: Box<dyn Buttons>, window: Duration) -> std::io::Result<mpsc::Receiver<ButtonEvent>> {
    // Presses are rare and never dropped: a small channel with back-pressure.
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new().name("buttons".into()).spawn(move || {
        let origin = source.origin();
        let mut call = Debouncer::new(window);
        let mut hangup = Debouncer::new(window);
        loop {
            let edge = match source.next_edge() {
                Ok(edge) => edge,
                Err(HwError::Closed(what)) => {
                    info!(source = what, "button input closed");
                    return;
                }
                Err(e) => {
                    error!(error = %e, "buttons failed");
                    return;
                }
            };
            let deb = match edge.button {
                Button::Call => &mut call,
                Button::HangUp => &mut hangup,
            };
            if deb.handle_edge(edge.pressed, edge.at) {
                debug!(button = edge.button.as_str(), "press");
                let ev = ButtonEvent { button: edge.button, at: edge.at, origin };
                if tx.blocking_send(ev).is_err() {
                    return;
                }
            }
        }
    })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Edges of one press that bounces for `bounce` ms on the way down and on the way up.
    fn bouncy_press(start: u64, bounce: u64, hold: u64, step: u64) -> Vec<(bool, Duration)> {
        let mut edges = Vec::new();
        let mut t = start;
        let mut level = true;
        while t < start + bounce {
            edges.push((level, ms(t)));
            level = !level;
            t += step;
        }
        edges.push((true, ms(t)));
        let release = start + bounce + hold;
        let mut t = release;
        let mut level = false;
        while t < release + bounce {
            edges.push((level, ms(t)));
            level = !level;
            t += step;
        }
        edges.push((false, ms(t)));
        edges
    }

    #[test]
    fn clean_presses_count_once_each() {
        let mut d = Debouncer::new(ms(50));
        assert!(d.handle_edge(true, ms(1000)));
        assert!(!d.handle_edge(false, ms(1200)));
        assert!(d.handle_edge(true, ms(1500)));
    }

    #[test]
    fn thirty_ms_bounce_gives_one_press() {
        let mut d = Debouncer::new(ms(50));
        let presses =
            bouncy_press(1000, 30, 200, 3).into_iter().filter(|&(p, t)| d.handle_edge(p, t)).count();
        assert_eq!(presses, 1);
    }

    proptest! {
        /// Any number of presses, each bouncing up to 30 ms with edges 1–10 ms apart and held
        /// at least 80 ms: exactly one press each.
        #[test]
        fn bouncing_presses_counted_exactly(
            presses in proptest::collection::vec((0u64..=30, 80u64..400, 1u64..=10, 60u64..500), 1..20)
        ) {
            let mut d = Debouncer::new(ms(50));
            let mut t = 10_000;
            let mut counted = 0;
            for (bounce, hold, step, gap) in &presses {
                for (p, at) in bouncy_press(t, *bounce, *hold, *step) {
                    counted += usize::from(d.handle_edge(p, at));
                }
                t += bounce * 2 + hold + step * 2 + gap;
            }
            prop_assert_eq!(counted, presses.len());
        }
    }
}
