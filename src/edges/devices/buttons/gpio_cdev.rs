//! Buttons on the GPIO character device (`/dev/gpiochipN`), for any Linux board.

use std::path::PathBuf;
use std::time::Duration;

use gpiocdev::line::{Bias, EdgeDetection, EdgeKind, Offset, Value};
use gpiocdev::request::Request;

use super::{Button, Buttons, Origin, RawEdge};
use crate::edges::devices::HwError;

/// Line bias, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineBias {
    PullUp,
    PullDown,
    Disabled,
}

pub struct GpioButtons {
    request: Request,
    call: Offset,
    hangup: Offset,
}

impl GpioButtons {
    /// Requests the two lines as inputs with edge detection on both edges.
    pub fn open(
        chip: PathBuf,
        call: Offset,
        hangup: Offset,
        active_low: bool,
        bias: LineBias,
    ) -> Result<Self, HwError> {
        let mut builder = Request::builder();
        builder
            .on_chip(chip.clone())
            .with_consumer("kioskd-buttons")
            .with_lines(&[call, hangup])
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            .with_bias(match bias {
                LineBias::PullUp => Bias::PullUp,
                LineBias::PullDown => Bias::PullDown,
                LineBias::Disabled => Bias::Disabled,
            });
        if active_low {
            builder.as_active_low();
        }
        let request = builder.request().map_err(|e| HwError::Open {
            what: "GPIO button lines on",
            path: chip,
            source: Box::new(e),
        })?;
        Ok(Self { request, call, hangup })
    }
}

impl Buttons for GpioButtons {
    fn next_edge(&mut self) -> Result<RawEdge, HwError> {
        loop {
            let ev = self
                .request
                .read_edge_event()
                .map_err(|e| HwError::Io { what: "reading GPIO button events", source: Box::new(e) })?;
            let button = if ev.offset == self.call {
                Button::Call
            } else if ev.offset == self.hangup {
                Button::HangUp
            } else {
                continue;
            };
            // Values are logical: with active-low applied, rising means pressed.
            let pressed = ev.kind == EdgeKind::Rising;
            return Ok(RawEdge { button, pressed, at: Duration::from_nanos(ev.timestamp_ns) });
        }
    }

    fn origin(&self) -> Origin {
        Origin::Gpio
    }

    fn next_edge_within(&mut self, timeout: Duration) -> Result<Option<RawEdge>, HwError> {
        let ready = self
            .request
            .wait_edge_event(timeout)
            .map_err(|e| HwError::Io { what: "waiting for GPIO button events", source: Box::new(e) })?;
        if ready { self.next_edge().map(Some) } else { Ok(None) }
    }

    fn level(&mut self, button: Button) -> Option<bool> {
        let offset = match button {
            Button::Call => self.call,
            Button::HangUp => self.hangup,
        };
        // Logical values: with active-low applied, active means pressed.
        self.request.value(offset).ok().map(|v| v == Value::Active)
    }
}
