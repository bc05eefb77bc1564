//! A simulated network for tests and benches, since `tc netem` is not available on the build
//! machines (DESIGN.md §5).
//!
//! - [`link`]: the sans-IO core, one direction of a path: seeded independent and burst
//!   (Gilbert–Elliott) loss, delay, jitter, reordering, a rate-limited bottleneck with a
//!   tail-drop queue, and outage windows. Time is an argument, randomness comes from a seed.
//!   Usable as is in simulated tests (STYLE.md (e)).
//! - `edges::netsim`: the tokio driver, a UDP proxy that puts one [`Link`] per client in each
//!   direction between real sockets, so that real QUIC endpoints can be tested through it.
//!
//! ```no_run
//! # async fn example(server: std::net::SocketAddr) -> std::io::Result<()> {
//! use std::time::Duration;
//! use kioskd::edges::netsim::{Direction, UdpProxy};
//! use kioskd::netsim::LinkConfig;
//! let bad = LinkConfig { loss: 0.05, delay: Duration::from_millis(40), seed: 1, ..LinkConfig::default() };
//! let proxy = UdpProxy::start("127.0.0.1:0".parse().unwrap(), server, bad.clone(), bad).await?;
//! // point the client at proxy.local_addr(); later, cut the uplink for 2 s from now:
//! let cut = LinkConfig { outages: vec![(Duration::ZERO, Duration::from_secs(2))], ..LinkConfig::default() };
//! proxy.set_config(Direction::Up, cut).expect("valid config");
//! println!("{:?}", proxy.stats());
//! proxy.stop().await;
//! # Ok(()) }
//! ```

pub mod link;

pub use link::{ConfigError, GilbertElliott, Link, LinkConfig, LinkStats};
