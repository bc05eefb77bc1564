//! kioskd: video-call kiosks for bank branches — the kiosk daemon, the hub and the agent
//! console, built around sans-IO cores (`protocol`, `call`, `queue`) with thin tokio and
//! hardware edges around them.

pub mod agent;
pub mod bench;
pub mod call;
pub mod call_media;
pub mod config;
pub mod demo;
pub mod devices;
pub mod display;
pub mod doctor;
pub mod health;
pub mod hub;
pub mod kiosk;
pub mod loadgen;
pub mod media;
pub mod metrics;
pub mod net;
pub mod netsim;
pub mod protocol;
pub mod queue;
pub mod record;
pub mod systemd;
pub mod ui;
