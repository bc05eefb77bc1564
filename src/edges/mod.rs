//! The edges: the code that moves bytes between the world and the cores. Each is thin: it
//! reads or writes a device, a socket or a file and hands what it got to a core.

pub mod browser;
pub mod config;
pub mod cpu;
pub mod db;
pub mod devices;
pub mod display;
pub mod health;
pub mod net;
pub mod netsim;
pub mod session;
pub mod systemd;
