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
use tracing::{debug, error, info, trace};

pub use crate::call::Button;
use crate::edges::devices::HwError;

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

    /// Waits at most `timeout` for the next raw edge; `None` when none came. A backend that
    /// cannot wait with a timeout blocks as [`Buttons::next_edge`] does.
    fn next_edge_within(&mut self, timeout: Duration) -> Result<Option<RawEdge>, HwError> {
        let _ = timeout;
        self.next_edge().map(Some)
    }

    /// The button's level now (true: pressed), where the backend can read it.
    fn level(&mut self, button: Button) -> Option<bool> {
        let _ = button;
        None
    }
}

/// Turns bouncing edges into single presses. Sans-IO and timer-free.
///
/// Contacts bounce for a few milliseconds on press and on release, so edges come in bursts,
/// each edge closer than `window` to the previous one. A burst that starts after `window` of
/// quiet while the button is released is a press, taken on its first edge whatever that edge
/// reports: the GPIO character device reports each edge with the line's level read when its
/// interrupt thread runs, which during a bounce may already be the level of a later edge. The
/// level the last edge of a burst reports is usually right (nothing changed after it), but an
/// edge can also be lost in a burst, so where the backend can read the line, the level read
/// after `window` of quiet replaces it ([`Debouncer::settle`]). That level is the button's
/// state when the next burst starts: a burst that starts while the button is held is its
/// release. A person cannot release and press again within `window` (default 50 ms).
#[derive(Debug, Clone)]
pub struct Debouncer {
    window: Duration,
    last_edge: Option<Duration>,
    /// The level the last edge reported: pressed (after active-low is applied).
    level: bool,
}

impl Debouncer {
    pub fn new(window: Duration) -> Self {
        Self { window, last_edge: None, level: false }
    }

    /// Feeds one raw edge of this button; true when it is a press.
    pub fn handle_edge(&mut self, pressed: bool, at: Duration) -> bool {
        let quiet = self.last_edge.is_none_or(|last| at.saturating_sub(last) >= self.window);
        // After a quiet period `level` is what the previous burst settled on.
        let press = quiet && !self.level;
        self.last_edge = Some(at);
        self.level = pressed;
        press
    }

    /// The line has been quiet for at least the window and reads `pressed` now.
    pub fn settle(&mut self, pressed: bool) {
        self.level = pressed;
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
        // Edges came since the lines were last read after a quiet window.
        let mut unsettled = false;
        loop {
            let next = if unsettled { source.next_edge_within(window) } else { source.next_edge().map(Some) };
            let edge = match next {
                Ok(Some(edge)) => edge,
                Ok(None) => {
                    // Quiet for the window: the lines' levels now are the buttons' states.
                    unsettled = false;
                    for (button, deb) in [(Button::Call, &mut call), (Button::HangUp, &mut hangup)] {
                        if let Some(pressed) = source.level(button) {
                            trace!(button = button.as_str(), pressed, "settled");
                            deb.settle(pressed);
                        }
                    }
                    continue;
                }
                Err(HwError::Closed(what)) => {
                    info!(source = what, "button input closed");
                    return;
                }
                Err(e) => {
                    error!(error = %e, "buttons failed");
                    return;
                }
            };
            unsettled = true;
            trace!(
                button = edge.button.as_str(),
                pressed = edge.pressed,
                at_us = edge.at.as_micros() as u64,
                "edge"
            );
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

    #[test]
    fn a_press_whose_first_edge_reads_released_counts() {
        // The kernel read the level after the contacts had bounced open again.
        let mut d = Debouncer::new(ms(50));
        let edges = [(false, 1000), (true, 1002), (false, 1004), (true, 1006), (true, 1300), (false, 1303)];
        let presses: Vec<u64> =
            edges.iter().filter(|&&(p, t)| d.handle_edge(p, ms(t))).map(|&(_, t)| t).collect();
        assert_eq!(presses, [1000]);
        // Released (the last edge said so): the next burst is a press again.
        assert!(d.handle_edge(true, ms(2000)));
    }

    #[test]
    fn a_lost_last_edge_is_corrected_by_the_level_read_when_quiet() {
        // The press burst's last edge (down) was lost: the burst seems to end released.
        let mut d = Debouncer::new(ms(50));
        assert!(d.handle_edge(true, ms(1000)));
        assert!(!d.handle_edge(false, ms(1001)));
        d.settle(true); // the line reads pressed once quiet
        assert!(!d.handle_edge(false, ms(1400)), "the release is not a press");
        d.settle(false);
        assert!(d.handle_edge(true, ms(2000)));
    }

    /// Edges from a script, `None` where the lines stay quiet for the window; the HANGUP line
    /// reads the next of `levels` at each quiet. Then the input closes.
    struct Script {
        steps: std::collections::VecDeque<Option<RawEdge>>,
        levels: std::collections::VecDeque<bool>,
    }

    impl Buttons for Script {
        fn next_edge(&mut self) -> Result<RawEdge, HwError> {
            loop {
                match self.steps.pop_front() {
                    Some(Some(edge)) => return Ok(edge),
                    Some(None) => continue,
                    None => return Err(HwError::Closed("script")),
                }
            }
        }
        fn origin(&self) -> Origin {
            Origin::Gpio
        }
        fn next_edge_within(&mut self, _timeout: Duration) -> Result<Option<RawEdge>, HwError> {
            match self.steps.pop_front() {
                Some(step) => Ok(step),
                None => Err(HwError::Closed("script")),
            }
        }
        fn level(&mut self, button: Button) -> Option<bool> {
            match button {
                Button::Call => Some(false),
                Button::HangUp => self.levels.pop_front(),
            }
        }
    }

    #[test]
    fn the_thread_reads_the_levels_after_a_burst() {
        let edge = |pressed, t| Some(RawEdge { button: Button::HangUp, pressed, at: ms(t) });
        // A press whose last edge was lost (the line reads pressed once quiet), then its
        // release: one press, not two.
        let steps = [
            edge(true, 1000),
            edge(false, 1001),
            None,
            edge(false, 1400),
            edge(true, 1401),
            edge(false, 1402),
            None,
        ];
        let script =
            Script { steps: steps.into_iter().collect(), levels: [true, false].into_iter().collect() };
        let mut rx = spawn(Box::new(script), ms(50)).unwrap();
        let mut presses = 0;
        while rx.blocking_recv().is_some() {
            presses += 1;
        }
        assert_eq!(presses, 1);
    }

    #[test]
    fn a_tap_shorter_than_the_window_counts_once() {
        let mut d = Debouncer::new(ms(50));
        assert!(d.handle_edge(true, ms(1000)));
        assert!(!d.handle_edge(false, ms(1030)));
        assert!(d.handle_edge(true, ms(1200)), "settled released: the next tap is a press");
        assert!(!d.handle_edge(false, ms(1400)), "release after a hold");
    }

    proptest! {
        /// Any number of presses, each bouncing up to 30 ms with edges 1–10 ms apart and held
        /// at least 80 ms, where every edge but the last of each burst may report the wrong
        /// level (read after later edges): exactly one press each.
        #[test]
        fn bouncing_presses_with_stale_levels_counted_exactly(
            presses in proptest::collection::vec(
                (0u64..=30, 80u64..400, 1u64..=10, 60u64..500, any::<u64>()), 1..20)
        ) {
            let mut d = Debouncer::new(ms(50));
            let mut t = 10_000;
            let mut counted = 0;
            for (bounce, hold, step, gap, flips) in &presses {
                let edges = bouncy_press(t, *bounce, *hold, *step);
                // The last edge of the press burst: the last one before the release starts.
                let burst_end = edges.iter().filter(|&&(_, at)| at < ms(t + bounce + hold)).count() - 1;
                let last = edges.len() - 1;
                for (i, (p, at)) in edges.into_iter().enumerate() {
                    let stale = i != burst_end && i != last && (flips >> (i % 64)) & 1 == 1;
                    counted += usize::from(d.handle_edge(p != stale, at));
                }
                t += bounce * 2 + hold + step * 2 + gap;
            }
            prop_assert_eq!(counted, presses.len());
        }

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
