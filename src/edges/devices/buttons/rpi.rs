//! Buttons on a Raspberry Pi's GPIO header through rppal (BCM pin numbers).

use std::time::Duration;

use rppal::gpio::{Gpio, InputPin, Trigger};

use super::gpio_cdev::LineBias;
use super::{Button, Buttons, Origin, RawEdge};
use crate::edges::devices::HwError;

pub struct RpiButtons {
    gpio: Gpio,
    call: InputPin,
    hangup: InputPin,
    active_low: bool,
}

impl RpiButtons {
    pub fn open(call: u8, hangup: u8, active_low: bool, bias: LineBias) -> Result<Self, HwError> {
        let open_err = |e: rppal::gpio::Error| HwError::Open {
            what: "Raspberry Pi GPIO",
            path: "/dev/gpiomem".into(),
            source: Box::new(e),
        };
        let gpio = Gpio::new().map_err(open_err)?;
        let input = |pin: u8| -> Result<InputPin, HwError> {
            let pin = gpio.get(pin).map_err(open_err)?;
            let mut pin = match bias {
                LineBias::PullUp => pin.into_input_pullup(),
                LineBias::PullDown => pin.into_input_pulldown(),
                LineBias::Disabled => pin.into_input(),
            };
            pin.set_interrupt(Trigger::Both, None).map_err(open_err)?;
            Ok(pin)
        };
        let call = input(call)?;
        let hangup = input(hangup)?;
        Ok(Self { gpio, call, hangup, active_low })
    }
}

impl Buttons for RpiButtons {
    fn next_edge(&mut self) -> Result<RawEdge, HwError> {
        loop {
            let polled = self
                .gpio
                .poll_interrupts(&[&self.call, &self.hangup], false, None)
                .map_err(|e| HwError::Io { what: "polling Raspberry Pi GPIO", source: Box::new(e) })?;
            let Some((pin, event)) = polled else { continue };
            let button = if pin.pin() == self.call.pin() { Button::Call } else { Button::HangUp };
            let high = event.trigger == Trigger::RisingEdge;
            let at: Duration = event.timestamp;
            return Ok(RawEdge { button, pressed: high != self.active_low, at });
        }
    }

    fn origin(&self) -> Origin {
        Origin::Gpio
    }
}
