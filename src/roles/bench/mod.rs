//! `kioskd bench`: a full two-way call through the network impairment proxy, per scenario,
//! printing one JSON object per scenario.
//!
//! The kiosk reaches the hub through the proxy (both directions of its path impaired); the
//! agent is on the bank's network (direct). Figures are taken at the receiving ends, on one
//! clock (one process).

pub mod aec;
mod call;
mod figures;
pub mod load;
pub mod offers;

use std::time::Duration;

use crate::media::codec::VideoSettings;
use crate::netsim::link::{GilbertElliott, LinkConfig};
pub use figures::{BenchResult, DirectionFigures, OutageTexts, adapted_after, freezes, recovery_after};

/// A gap between shown pictures longer than this is a freeze (about five frames at 30 fps).
pub const FREEZE_GAP: Duration = Duration::from_millis(170);

/// A picture shown later than this after its capture counts as not yet adapted to the path
/// (the `cap500` target: video p95 ≤ 400 ms once adapted).
pub const ADAPTED_LATENCY_MS: u32 = 400;

/// One network condition, for both directions of the kiosk's path.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub link: LinkConfig,
    /// When the outage starts after the call connects, and how long it lasts.
    pub outage: Option<(Duration, Duration)>,
}

/// The named scenarios.
pub fn named(name: &str, seed: u64) -> Option<Scenario> {
    let ms = Duration::from_millis;
    let base = LinkConfig { seed, ..LinkConfig::default() };
    let link = match name {
        "clean" => base,
        "rtt80" => LinkConfig { delay: ms(40), jitter: ms(10), ..base },
        "loss5" => LinkConfig { loss: 0.05, ..base },
        "loss20" => LinkConfig { loss: 0.20, ..base },
        "burst" => LinkConfig { burst: Some(GilbertElliott::from_mean(10.0, 4.0)), ..base },
        "cap500" => LinkConfig { rate_bps: Some(500_000), queue_bytes: 64 * 1024, ..base },
        "outage3s" => base,
        "mobile" => LinkConfig {
            delay: ms(60),
            jitter: ms(20),
            loss: 0.03,
            rate_bps: Some(1_500_000),
            queue_bytes: 128 * 1024,
            ..base
        },
        _ => return None,
    };
    let outage = (name == "outage3s").then_some((Duration::from_secs(8), Duration::from_secs(3)));
    Some(Scenario { name: name.into(), link, outage })
}

pub const SCENARIOS: [&str; 8] =
    ["clean", "rtt80", "loss5", "loss20", "burst", "cap500", "outage3s", "mobile"];

/// Runs one call of `duration` under `scenario`.
pub async fn run(
    scenario: &Scenario,
    duration: Duration,
    video: VideoSettings,
) -> anyhow::Result<BenchResult> {
    let mut rig = call::Rig::start(scenario, duration, video).await?;
    let seen = rig.follow(scenario, duration).await;
    let path = rig.stop().await;
    Ok(BenchResult::of(&scenario.name, seen?, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_scenario_exists_and_only_outage3s_has_an_outage() {
        for name in SCENARIOS {
            let s = named(name, 1).expect(name);
            assert_eq!(s.outage.is_some(), name == "outage3s", "{name}");
        }
        assert!(named("nonsense", 1).is_none());
    }
}
