//! The roles: one driver per program of the `kioskd` binary, wiring cores to edges.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod hub;
pub mod kiosk;
