//! Optional LEDs that show the kiosk's state: CALL lit when a press would place a call, BUSY
//! lit while a call is being placed or held.

use std::path::PathBuf;

use gpiocdev::line::{Offset, Value};
use gpiocdev::request::Request;

use crate::call::KioskState;
use crate::edges::devices::HwError;

pub trait Leds: Send {
    fn show(&mut self, state: &KioskState) -> Result<(), HwError>;
}

/// LEDs on GPIO character-device lines.
pub struct GpioLeds {
    request: Request,
    call: Offset,
    busy: Offset,
}

impl GpioLeds {
    pub fn open(chip: PathBuf, call: Offset, busy: Offset, active_low: bool) -> Result<Self, HwError> {
        let mut builder = Request::builder();
        builder
            .on_chip(chip.clone())
            .with_consumer("kioskd-leds")
            .with_lines(&[call, busy])
            .as_output(Value::Inactive);
        if active_low {
            builder.as_active_low();
        }
        let request = builder.request().map_err(|e| HwError::Open {
            what: "GPIO LED lines on",
            path: chip,
            source: Box::new(e),
        })?;
        Ok(Self { request, call, busy })
    }
}

impl Leds for GpioLeds {
    fn show(&mut self, state: &KioskState) -> Result<(), HwError> {
        let on = |b: bool| if b { Value::Active } else { Value::Inactive };
        let ready = matches!(state, KioskState::Idle);
        let busy = state.in_call();
        for (line, value) in [(self.call, on(ready)), (self.busy, on(busy))] {
            self.request
                .set_value(line, value)
                .map_err(|e| HwError::Io { what: "setting a GPIO LED", source: Box::new(e) })?;
        }
        Ok(())
    }
}
