//! kioskd: video-call kiosks for bank branches — the kiosk daemon, the hub and the agent
//! console in one binary.
//!
//! The crate has three layers (docs/DESIGN.md §2 is the map; `tests/layers.rs` keeps it so):
//! - **cores** at the top level — sans-IO state machines and pure logic: bytes, events and
//!   "the time is now T" in, decisions out; no runtime, socket, thread or clock;
//! - [`edges`] — everything that touches the world: devices, network, screen, files, systemd,
//!   configuration, and the media session that wires the media core to them;
//! - [`roles`] — the programs: kiosk, hub, agent, demo and bench, each a driver that wires
//!   cores to edges.
//!
//! Cores import only cores; edges import cores and edges; roles import all three, and only
//! the demo and the bench (which run the other roles in one process) import other roles.

// Cores (sans-IO).
pub mod call;
pub mod console;
pub mod limits;
pub mod media;
pub mod netsim;
pub mod protocol;
pub mod queue;
pub mod record;
pub mod ui;

// Edges and roles.
pub mod edges;
pub mod roles;
